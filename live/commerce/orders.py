"""Orders: durable behind the buy path, paid or cancelled by the buyer, expired when unpaid.

Durability: the buy script appends each order to its card's Redis Stream in the same atomic
step that takes the stock. The persister (a consumer group, ``live.core.streams``) writes stream
entries to SQL in batches — idempotently, keyed by the order id — and acknowledges them only
after the commit. While the database is down, orders wait in the stream.

Expiry: orders awaiting payment sit in the card's deadlines sorted set; the sweeper (any
process, idempotent) releases those past ``pay_by``. Payment and expiry are both Lua scripts
on the same keys, so a payment racing an expiry ends in exactly one outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from live.commerce.inventory import Inventory, Result
from live.commerce.postsale import compact_extra, holds_stock, holds_stock_sql
from live.commerce.views import FENCED_MESSAGE, CompactOrder, card_of_order, money, order_view, parse_order
from live.core import keys
from live.core.auth import Principal
from live.core.errors import Conflict, Forbidden, NotFound, Unavailable, log_loop_error
from live.core.faults import Faults
from live.core.ids import iso, new_id, now_ms, utcnow
from live.core.models import Card, Order, Room
from live.core.streams import Entry, StreamConsumer
from live.integrations import outbox

if TYPE_CHECKING:
    from live.app.services import Services
    from live.commerce.flashbuy import FlashService

log = logging.getLogger(__name__)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class OrderService:
    def __init__(self, svc: Services, flash: FlashService) -> None:
        self.svc = svc
        self.flash = flash
        self.inventory: Inventory = flash.inventory
        s = svc.settings
        self.persister = StreamConsumer(
            svc.redis, group=keys.PERSIST_GROUP, consumer=svc.proc_id, apply=self._apply,
            streams=self._streams, dead_key=self._dead_key,
            on_dead=lambda stream: svc.metrics.dead_letters.labels("orders").inc(),
            batch=s.persister_batch, claim_idle_ms=s.persister_claim_idle_ms,
            max_deliveries=s.persister_max_deliveries, live_consumers=self._live_processes,
            gather_s=s.persister_gather_ms / 1000,
            claim_every_s=min(s.persister_claim_idle_ms / 2000, s.heartbeat_interval_s))
        self._rebuilds: dict[str, asyncio.Future[bool]] = {}
        self._recheck = asyncio.Event()  # set on a Redis connection failure: check fences at reconnect
        self.last_rebuild: dict[str, Any] = {}  # what the last rebuild found and made (for `live rebuild`)
        self.faults = Faults(s.fault_injection)  # test-only (live.core.faults); empty in production

    # --- persistence ----------------------------------------------------------------------
    async def _live_processes(self) -> set[str]:
        """Processes whose heartbeat is recent: consumers named after any other are dead."""
        cutoff = now_ms() - int(self.svc.settings.heartbeat_dead_after_s * 1000)
        alive = cast(list[str], await self.svc.redis.zrangebyscore(keys.PROCS, cutoff, "+inf"))
        return set(alive) | {self.svc.proc_id}

    async def _streams(self) -> list[str]:
        return [keys.card_stream(c) for c in await self.inventory.active_cards()]

    @staticmethod
    def _dead_key(stream: str) -> str:
        return stream.rsplit(":", 1)[0] + ":dead"

    async def _apply(self, stream: str, entries: list[Entry]) -> None:
        """Write a batch of one card's events to SQL in one transaction (idempotent)."""
        card_id = stream.split("{card:", 1)[1].split("}", 1)[0]
        creates: dict[str, CompactOrder] = {}
        updates: list[tuple[str, str, int]] = []
        card_updates: dict[str, Any] = {}
        top_seq = 0
        sell_outs: list[str] = []  # buys that took the last unit (webhook card.sold_out)
        for eid, f in entries:
            top_seq = max(top_seq, int(f.get("seq") or 0))
            t = f.get("t")
            if t == "created":
                o = parse_order(f["o"])
                if self.faults.take("lose_order"):  # test-only: the verdict must see a lost order
                    log.error("fault injection: order %s dropped by the persister", o["id"])
                    continue
                creates[o["id"]] = o
                if f.get("left") == "0":  # named by the card's seq (never reused), else the entry
                    sell_outs.append(f"s{f['seq']}" if f.get("seq") else eid)
            elif t == "status":
                if f["id"] in creates and creates[f["id"]]["s"] == "pending_payment":
                    creates[f["id"]]["s"] = f["s"]
                else:
                    updates.append((f["id"], f["s"], int(f["at"])))
            elif t == "stock":  # restocks only add: the highest total is the newest
                card_updates["stock_total"] = max(card_updates.get("stock_total", 0), int(f["stock"]))
            elif t == "card":
                card_updates["status"] = f["s"]
        room_id = await self.flash.room_of(card_id) if creates else ""
        async with self.svc.db() as s, s.begin():
            if creates:
                rows = [{
                    "id": o["id"], "card_id": card_id, "room_id": room_id, "user_id": o["u"],
                    "request_id": o["r"], "qty": int(o["q"]), "amount_cents": int(o["a"]), "status": o["s"],
                    "created_at": _dt(int(o["c"])), "pay_by": _dt(int(o["p"])), "updated_at": utcnow(),
                } for o in creates.values()]
                dialect = self.svc.engine.dialect.name
                # Core insert on the table (not the ORM entity): no per-row ORM bookkeeping.
                table = cast(Table, Order.__table__)
                ins = (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table))
                await s.execute(ins.on_conflict_do_nothing(index_elements=["id"]), rows)
                await outbox.orders_created(s, card_id, rows)  # webhooks: iff these rows commit
            for order_id, status, at in updates:
                # Status only moves forward from pending_payment: a replay changes nothing.
                await s.execute(update(Order).where(Order.id == order_id, Order.status == "pending_payment")
                                .values(status=status, updated_at=_dt(at)))
            if sell_outs and (sold := await s.get(Card, card_id)) is not None:
                for sell_out in sell_outs:  # keyed by the buy: once per sell-out, however often replayed
                    await outbox.card_sold_out(s, sold, sell_out=sell_out)
            if card_updates:
                # Events may arrive again or late (a claimed batch, a restored stream): the stock
                # total only grows and "closed" is final, so a replay cannot move SQL back.
                card = await s.get(Card, card_id)
                if card is not None:
                    if "stock_total" in card_updates:
                        card.restocked = max(card.restocked, card_updates["stock_total"] - card.stock)
                    if "status" in card_updates and card.status != "closed":
                        if card_updates["status"] == "sold_out" != card.status:
                            await outbox.card_sold_out(s, card)
                        card.status = card_updates["status"]
            if top_seq:
                # The fence's record in SQL: the highest seq of the card persisted (only grows).
                await s.execute(update(Card).where(Card.id == card_id, Card.seq < top_seq).values(seq=top_seq))
        self.svc.metrics.orders_persisted.inc(len(entries))

    async def flush(self, timeout: float = 2.0, *, claim: bool = False) -> None:
        """Persist what is in the streams now (used before reading orders from SQL); with
        ``claim``, also what dead processes left pending."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.persister.drain_once(claim=claim)

    async def backlog(self, card_id: str) -> int:
        """Events of the card not yet in SQL: orders, and their after-payment versions."""
        return (int(await self.svc.redis.xlen(keys.card_stream(card_id)))
                + int(await self.svc.redis.xlen(keys.card_after_stream(card_id))))

    # --- reading -------------------------------------------------------------------------------
    async def get(self, who: Principal, order_id: str) -> dict[str, Any]:
        card_id = card_of_order(order_id)
        o = await self.inventory.order(card_id, order_id)
        view = order_view(card_id, o) if o else await self._sql_order(order_id)
        if view["user_id"] != who.id and not await self._can_see_card(who, card_id):
            raise NotFound("no such order")  # not yours: do not reveal that it exists
        return view

    async def _sql_order(self, order_id: str) -> dict[str, Any]:
        async with self.svc.db() as s:
            row = await s.get(Order, order_id)
        if row is None:
            raise NotFound("no such order")
        return self._row_view(row)

    @staticmethod
    def _row_view(row: Order) -> dict[str, Any]:
        return {"id": row.id, "card_id": row.card_id, "user_id": row.user_id, "qty": row.qty,
                "amount": money(row.amount_cents), "status": row.status, "created_at": iso(row.created_at),
                "pay_by": iso(row.pay_by), "request_id": row.request_id,
                "shipment": ({"carrier": row.carrier, "tracking_no": row.tracking_no, "shipped_at": iso(row.shipped_at)}
                             if row.shipped_at else None),
                "paid_amount": money(row.paid_amount_cents), "refunded_amount": money(row.refunded_amount_cents),
                "stock_returned": row.stock_returned or row.status in ("cancelled", "expired"),
                "after_sale_id": row.after_sale_id, "completed_at": iso(row.completed_at)}

    async def _can_see_card(self, who: Principal, card_id: str) -> bool:
        if who.is_moderator:
            return True
        async with self.svc.db() as s:
            row = (await s.execute(select(Room.streamer_id).join(Card, Card.room_id == Room.id)
                                   .where(Card.id == card_id))).first()
        return row is not None and row[0] == who.id

    async def mine(self, who: Principal, limit: int = 100) -> list[dict[str, Any]]:
        await self.flush()
        async with self.svc.db() as s:
            rows = list((await s.execute(select(Order).where(Order.user_id == who.id)
                                         .order_by(Order.created_at.desc()).limit(limit))).scalars())
        views = [self._row_view(r) for r in rows]
        # Redis is the authority for live orders: show the newest status even before SQL has it.
        # (After payment too: shipping, refunds and cases move the order in Redis first.)
        for i, v in enumerate(views):
            o = await self.inventory.order(v["card_id"], v["id"])
            if o:
                views[i] = order_view(v["card_id"], o)
        return views

    # --- lifecycle ------------------------------------------------------------------------------
    async def cancel(self, who: Principal, order_id: str) -> dict[str, Any]:
        card_id = card_of_order(order_id)
        res = await self.inventory.release(card_id, order_id, "cancelled", now_ms(), who.id)
        if res.code == "FENCED":
            raise Unavailable(FENCED_MESSAGE)
        if res.code in ("NOT_FOUND", "FORBIDDEN"):
            raise NotFound("no such order")
        if res.code == "STATE":
            assert res.order is not None
            raise Conflict(f"order is {res.order['s']}", status=res.order["s"])
        return await self._released(card_id, res)

    async def _release(self, card_id: str, order_id: str, status: str) -> dict[str, Any] | None:
        res = await self.inventory.release(card_id, order_id, status, now_ms())
        if res.code != "OK":
            return None
        if status == "expired":
            self.svc.metrics.orders_expired.inc()
        return await self._released(card_id, res)

    async def _released(self, card_id: str, res: Result) -> dict[str, Any]:
        view = order_view(card_id, cast(CompactOrder, res.order))  # release.lua: an OK carries its order
        room_id = await self.flash.room_of(card_id)
        self.flash.mark_dirty(card_id, room_id)
        if res.status:  # a sold-out card is back on sale
            await self.flash.status_changed(room_id, card_id, res.status)
        await self.svc.pusher.to_user(view["user_id"], "order:update", view)
        return view

    async def sweep_once(self) -> int:
        """Expire every order past its pay_by; returns how many this call expired."""
        n = 0
        now = now_ms()
        for card_id in await self.inventory.active_cards():
            for order_id in await self.inventory.due(card_id, now):
                if await self._release(card_id, order_id, "expired") is not None:
                    n += 1
        return n

    async def sweeper_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
                await self._retire_cards()
            except Exception as e:
                log_loop_error(log, "sweeper failed", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.svc.settings.sweeper_interval_s)

    async def _retire_cards(self) -> None:
        """Closed cards with nothing left to expire or persist leave the loops' working set."""
        for card_id in await self.inventory.active_cards():
            st = await self.inventory.state(card_id)
            if st is None or st.status != "closed":
                continue
            if await self.svc.redis.zcard(keys.card_deadlines(card_id)) == 0 and await self.backlog(card_id) == 0:
                await self.svc.redis.srem(keys.ACTIVE_CARDS, card_id)

    # --- invariant ----------------------------------------------------------------------------------
    async def reconcile(self, card_id: str) -> dict[str, Any]:
        """Check the stock invariant of one card across Redis and SQL; report every mismatch.

        SQL is read before Redis, so a persister batch committed (and acknowledged) between the
        two reads is in neither view and looks missing; a mismatch with nothing pending is
        therefore read once more before it is reported (the second read sees that batch)."""
        first = await self._reconcile_once(card_id)
        if first["ok"] or first["pending_persist"] or first.get("fenced"):
            return first
        await asyncio.sleep(0.2)
        return await self._reconcile_once(card_id)

    async def _reconcile_once(self, card_id: str) -> dict[str, Any]:
        problems: list[str] = []
        async with self.svc.db() as s:
            card = await s.get(Card, card_id)
            if card is None:
                raise NotFound("no such card")
            # Three columns as plain rows (not ORM objects): a big sale has 100,000s of orders.
            sql_orders = list((await s.execute(
                select(Order.id, Order.status, Order.qty, Order.stock_returned)
                .where(Order.card_id == card_id))).all())
        state, redis_orders, bought, backlog = await self.inventory.snapshot(card_id)
        sql_active = sum(o.qty for o in sql_orders if holds_stock(o.status, o.stock_returned))
        result: dict[str, Any] = {"card_id": card_id, "pending_persist": backlog,
                                  "sql_stock": card.stock + card.restocked, "sql_active_units": sql_active,
                                  "sql_orders": len(sql_orders), "sql_seq": card.seq}
        seq, fence = (state.seq, state.fence) if state else (0, None)
        result.update(seq=seq, fenced=fence is not None)
        if fence is not None:
            problems.append("the card is fenced (a rebuild is due or running)")
        elif state is not None and seq < card.seq:
            problems.append(f"redis is behind sql (seq {seq} < {card.seq}): a rebuild is due")
        if state is None:
            problems.append("redis has no state for this card")
        else:
            redis_active = sum(int(o["q"]) for o in redis_orders.values() if holds_stock(o["s"], bool(o.get("sr"))))
            result.update(stock=state.stock, left=state.left, sold=state.sold, redis_active_units=redis_active)
            if state.left < 0:
                problems.append(f"left is negative ({state.left})")
            if state.left + redis_active != state.stock:
                problems.append(f"redis: left {state.left} + active {redis_active} != stock {state.stock}")
            per_user: dict[str, int] = defaultdict(int)
            for o in redis_orders.values():
                if holds_stock(o["s"], bool(o.get("sr"))):
                    per_user[o["u"]] += int(o["q"])
            if dict(per_user) != bought:
                problems.append("redis: bought-per-user does not match the orders")
            over = [u for u, q in per_user.items() if q > state.limit]
            if over:
                problems.append(f"{len(over)} user(s) over the limit of {state.limit}")
            if backlog == 0:
                if state.stock != card.stock + card.restocked:
                    problems.append(f"sql stock {card.stock + card.restocked} != redis stock {state.stock}")
                sql_status = {o.id: o.status for o in sql_orders}
                redis_status = {k: o["s"] for k, o in redis_orders.items()}
                if sql_status != redis_status:
                    missing = set(redis_status) - set(sql_status)
                    differ = [k for k in set(sql_status) & set(redis_status) if sql_status[k] != redis_status[k]]
                    problems.append(f"sql vs redis orders: {len(missing)} missing in sql, {len(differ)} differ, "
                                    f"{len(set(sql_status) - set(redis_status))} unknown to redis")
                if sql_active + state.left != state.stock:
                    problems.append(f"sql: left {state.left} + active {sql_active} != stock {state.stock}")
        result["problems"] = problems
        result["ok"] = not problems
        return result

    async def reconcile_all(self) -> list[dict[str, Any]]:
        reports = []
        for c in await self.inventory.active_cards():
            try:
                reports.append(await self.reconcile(c))
            except NotFound:
                # Redis is written first, inside the creating transaction: a card being created
                # right now, or one whose creator died before the commit, is in Redis only. Nobody
                # was shown it and nothing was sold from it; it must not stop the other checks.
                reports.append({"card_id": c, "pending_persist": 0, "sql_orders": 0, "problems": [], "ok": True,
                                "note": "in redis only: being created, or its creation never committed"})
        self.svc.metrics.reconcile_mismatches.set(sum(1 for r in reports if not r["ok"]))
        return reports

    async def reconcile_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.svc.settings.reconcile_interval_s)
            if stop.is_set():
                return
            try:
                for r in await self.reconcile_all():
                    if not r["ok"] and r["pending_persist"] == 0:
                        log.error("reconcile: card %s: %s", r["card_id"], "; ".join(r["problems"]))
            except Exception as e:
                log_loop_error(log, "reconcile failed", e)

    async def audit(self, who: Principal, card_id: str, order_ids: list[str]) -> dict[str, Any]:
        """The server's own verdict on a sale, for load testers (the card's streamer or a moderator)."""
        if not await self._can_see_card(who, card_id):
            raise Forbidden("not your card")
        await self.flush(claim=True)
        aftersales = getattr(self.svc, "aftersales", None)  # None when that domain is not installed
        if aftersales is not None:
            await aftersales.post.flush(claim=True)
        rec = await self.reconcile(card_id)
        async with self.svc.db() as s:
            dups = (await s.execute(
                select(func.count()).select_from(
                    select(Order.user_id, Order.request_id).where(Order.card_id == card_id)
                    .group_by(Order.user_id, Order.request_id).having(func.count() > 1).subquery()))).scalar_one()
            known: set[str] = set()
            ids = list(dict.fromkeys(order_ids))
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                known |= set((await s.execute(select(Order.id).where(Order.id.in_(chunk)))).scalars())
            sold_sql = (await s.execute(select(func.coalesce(func.sum(Order.qty), 0)).where(
                Order.card_id == card_id, holds_stock_sql()))).scalar_one()
            over_limit = (await s.execute(
                select(func.count()).select_from(
                    select(Order.user_id).where(Order.card_id == card_id, holds_stock_sql())
                    .group_by(Order.user_id).having(func.sum(Order.qty) > func.max(Card.limit_per_user))
                    .join(Card, Card.id == Order.card_id).subquery()))).scalar_one()
        stock = rec.get("stock", rec["sql_stock"])
        return {
            "card_id": card_id, "stock": stock, "left": rec.get("left"), "sold": rec.get("sold"),
            "orders": rec["sql_orders"], "sold_in_sql": int(sold_sql), "pending_persist": rec["pending_persist"],
            "oversold": max(0, int(sold_sql) - stock, -(rec.get("left") or 0)),
            "missing_order_ids": [i for i in ids if i not in known],
            "duplicate_orders": int(dups), "over_limit_users": int(over_limit),
            "invariant_ok": rec["ok"], "problems": rec["problems"],
        }

    # --- recovery: fencing and rebuild (docs/operations.md) -------------------------------------
    async def rebuild(self, card_id: str, *, force: bool = False) -> bool:
        """Rebuild a card's Redis state from SQL if it is missing, fenced or behind SQL (always,
        with ``force``). False if SQL has no such card (then nothing is created anywhere).

        Concurrent callers in this process share one run; across processes the fence decides.
        """
        task = self._rebuilds.get(card_id)
        if task is None:
            task = self._rebuilds[card_id] = asyncio.ensure_future(self._rebuild(card_id, force))
            task.add_done_callback(lambda _: self._rebuilds.pop(card_id, None))
        return await asyncio.shield(task)

    async def _rebuild(self, card_id: str, force: bool) -> bool:
        async with self.svc.db() as s:
            sql_seq = (await s.execute(select(Card.seq).where(Card.id == card_id))).scalar_one_or_none()
        if sql_seq is None:
            return False  # unknown id: checked before any key is written
        if not force:
            status, seq, fence, fence_at = (await self.inventory.seqs([card_id]))[card_id]
            if not self._needs_rebuild(status, seq, fence, fence_at, sql_seq):
                if fence is not None:  # another rebuild is running: its end is what the caller waits for
                    await self._until_unfenced(card_id)
                return True
        token = new_id()
        stale_ms = int(self.svc.settings.fence_stale_s * 1000)
        # 1. Fence: from here no script changes the card, so its stream stops growing.
        while True:
            code, redis_seq, fence_min = await self.inventory.fence(card_id, token, now_ms(), stale_ms)
            if code == "OK":
                break
            if await self._until_unfenced(card_id):  # another rebuild held the fence and finished
                return True
        before = await self.inventory.state(card_id)
        # 2. Persist every event still in the stream — new ones, and those another consumer read
        # but did not commit (its PEL): SQL is then complete. A failure leaves the fence up; it
        # goes stale and the fence check of any process takes the rebuild over.
        await self._persist_stream(keys.card_stream(card_id))
        aftersales = getattr(self.svc, "aftersales", None)  # None when that domain is not installed
        after = aftersales.post if aftersales is not None else None
        if after is not None:  # the orders' after-payment versions too
            await after.persister.drain(keys.card_after_stream(card_id))
        # 3. Replace the Redis state with SQL's, and lift the fence, in one script.
        async with self.svc.db() as s:
            card = await s.get(Card, card_id)
            assert card is not None
            orders = list((await s.execute(select(Order).where(Order.card_id == card_id))).scalars())
            streamer = (await s.execute(select(Room.streamer_id).where(Room.id == card.room_id))).scalar_one()
        data, left = self._redis_image(card, orders)
        fans = getattr(self.svc, "fans", None)  # None when that domain is not installed
        if card.audience == "followers" and fans is not None:
            # The followers-only gate (same hash tag, so lost with the rest) is back before the
            # fence lifts: a rebuilt card never sells to everyone, not even for a moment.
            await fans.gate_card(card_id, streamer)
        code, seq = await self.inventory.replace(card_id, token, max(card.seq, redis_seq, fence_min), data)
        if code != "OK":
            return True  # our fence went stale and another rebuild took over: it finishes
        await self.svc.redis.sadd(keys.ACTIVE_CARDS, card_id)
        self.inventory.floors.forget(card_id)
        self.inventory.floors.raise_to(card_id, seq)
        if after is not None:  # cases, their deadlines and payment transactions, from SQL
            await after.restore(card_id, orders)
        self.last_rebuild = {"card_id": card_id, "left_before": before.left if before else None,
                             "seq_before": redis_seq, "sql_seq": card.seq, "left": left, "seq": seq}
        self.svc.metrics.rebuilds.inc()
        log.warning("rebuilt redis state of card %s from SQL: stock %d, left %d, %d orders, seq %d",
                    card_id, card.stock + card.restocked, left, len(orders), seq)
        return True

    async def _until_unfenced(self, card_id: str) -> bool:
        """Wait for another rebuild to lift the card's fence: True once lifted, False if it went
        stale first (its rebuilder died: the caller takes over)."""
        deadline = asyncio.get_running_loop().time() + self.svc.settings.fence_stale_s
        while asyncio.get_running_loop().time() < deadline:
            status, _, fence, _ = (await self.inventory.seqs([card_id]))[card_id]
            if fence is None:
                return status is not None
            await asyncio.sleep(0.02)
        return False

    def _needs_rebuild(self, status: str | None, seq: int, fence: str | None, fence_at: int, sql_seq: int) -> bool:
        """Missing, behind SQL, fenced by a buy (``stale``) or by a rebuild gone silent."""
        if fence is not None:
            return fence == "stale" or now_ms() - fence_at >= self.svc.settings.fence_stale_s * 1000
        return status is None or seq < sql_seq

    async def _persist_stream(self, stream: str) -> None:
        if not await self.svc.redis.exists(stream):
            return
        await self.persister.ensure_group(stream)
        start = "-"
        while True:
            # decode_responses: ids and fields are str (a trimmed entry has no fields: None)
            rows = cast(list[tuple[str, dict[str, str] | None]], await self.svc.redis.xrange(
                stream, min=start, max="+", count=self.svc.settings.persister_batch))
            if not rows:
                return
            # Applied and acknowledged for whichever consumer held them (apply is idempotent).
            await self.persister.process(stream, [(i, f) for i, f in rows if f is not None])
            start = "(" + rows[-1][0]

    @staticmethod
    def _redis_image(card: Card, orders: list[Order]) -> tuple[dict[str, Any], int]:
        """The card's Redis keys as SQL says they are (card_rebuild.lua's argument); and ``left``."""
        stock = card.stock + card.restocked
        left = stock - sum(o.qty for o in orders if holds_stock(o.status, o.stock_returned))
        status = card.status
        if status != "closed":
            status = "sold_out" if left <= 0 else ("on_sale" if status == "sold_out" else status)
        ms = lambda d: int(d.replace(tzinfo=UTC).timestamp() * 1000)  # noqa: E731
        state = {"status": status, "stock": stock, "left": left, "limit": card.limit_per_user,
                 "price": card.price_cents, "starts_ms": ms(card.starts_at),
                 "ends_ms": ms(card.ends_at) if card.ends_at else 0, "room": card.room_id}
        bought: dict[str, int] = defaultdict(int)
        packed, requests, deadlines = [], [], []
        for o in orders:
            compact = {"id": o.id, "u": o.user_id, "q": o.qty, "s": o.status, "c": ms(o.created_at),
                       "p": ms(o.pay_by), "r": o.request_id, "a": o.amount_cents, **compact_extra(o)}
            packed.append([o.id, orjson.dumps(compact).decode()])
            requests.append([f"{o.user_id}:{o.request_id}", o.id])
            if holds_stock(o.status, o.stock_returned):
                bought[o.user_id] += o.qty
            if o.status == "pending_payment":
                deadlines.append([o.id, compact["p"]])
        data = {"state": {k: str(v) for k, v in state.items()}, "orders": packed, "requests": requests,
                "bought": [[u, q] for u, q in bought.items()], "deadlines": deadlines}
        return data, left

    async def check_fences_once(self) -> int:
        """Compare every selling card's seq in Redis with SQL's; rebuild those missing, behind
        or fenced. Raises this process's seq floors to SQL's, so that its buys fence a card
        whose Redis went back in time even before this check reaches it. Returns rebuilds."""
        async with self.svc.db() as s:
            rows = list((await s.execute(select(Card.id, Card.seq).where(Card.status != "closed"))).all())
        # SQL first, then Redis: Redis's seq only grows, so a persist in between is no false alarm.
        states = await self.inventory.seqs([r.id for r in rows])
        n = 0
        for card_id, sql_seq in rows:
            self.inventory.floors.raise_to(card_id, sql_seq)
            status, seq, fence, fence_at = states[card_id]
            if self._needs_rebuild(status, seq, fence, fence_at, sql_seq):
                if fence is None and status is not None:
                    log.error("redis is behind SQL for card %s (seq %d < %d): rebuilding", card_id, seq, sql_seq)
                await self.rebuild(card_id)
                n += 1
        return n

    def redis_trouble(self) -> None:
        """A Redis connection failed (restart, failover): check again as soon as Redis answers."""
        self._recheck.set()

    async def fence_loop(self, stop: asyncio.Event) -> None:
        """``check_fences_once`` at start, every ``fence_check_interval_s``, and right after a
        Redis connection failed — retried every 0.1 s until Redis answers again (the reconnect)."""
        while not stop.is_set():
            woken = self._recheck.is_set()
            self._recheck.clear()
            try:
                await self.check_fences_once()
                retry = False
            except Exception as e:
                log.warning("fence check failed: %r", e)
                retry = woken  # Redis was in trouble: again soon, until it answers
            with contextlib.suppress(TimeoutError):
                if retry:
                    self._recheck.set()
                    await asyncio.wait_for(stop.wait(), 0.1)
                else:
                    await asyncio.wait_for(_first(stop.wait(), self._recheck.wait()),
                                           self.svc.settings.fence_check_interval_s)


async def _first(*aws: Any) -> None:
    """Return when the first of ``aws`` finishes (the others are cancelled)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
