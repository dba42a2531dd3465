"""What the orders after payment share: the after-sales Lua scripts, their keys, the due-time
index and its registry of cards, the persister that mirrors every transition into SQL, the
views of orders and cases, and the pushes.

Where the truth lives: an order lives in its card's Redis hash (the buy script made it there,
with the stock), so every transition after payment is one Lua script on the card's hash tag
that moves the order, its case, the stock and the deadlines together — one outcome however
requests, deadlines and moderators race. Each script appends the new version of what it
changed to the card's after-sales stream; a consumer group writes those versions to SQL
(upserts that never go back to an older version), acknowledging only after the commit, so a
process killed at any point loses nothing and applies nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from live.commerce.views import (
    FENCED_MESSAGE,
    CaseStep,
    CompactCase,
    CompactOrder,
    card_of_order,
    money,
    order_view,
    parse_case,
    parse_order,
)
from live.core import keys
from live.core.errors import NotFound, Unavailable
from live.core.ids import iso_ms, now_ms, utcnow
from live.core.models import AfterSaleCase, AfterSaleStep, Base, Card, Order, Payment, Room
from live.core.scripts import source
from live.core.streams import Entry, StreamConsumer
from live.integrations import outbox

if TYPE_CHECKING:
    from live.app.services import Services
    from live.commerce.flashbuy import FlashService

log = logging.getLogger(__name__)

SCRIPTS = ["after_pay", "after_ship", "after_confirm", "after_cancel", "after_open", "after_case"]
OPEN_CASE = ("requested", "awaiting_return", "returned", "rejected", "escalated")
# Statuses whose units the order gave back by the status itself (release.lua does not mark sr).
RETURNED_BY_STATUS = ("cancelled", "expired")


def holds_stock(status: str, stock_returned: bool) -> bool:
    """Whether an order still holds its units (the invariant counts exactly these)."""
    return not stock_returned and status not in RETURNED_BY_STATUS


def _dt(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _ms(dt: datetime | None) -> int | None:
    return int(dt.replace(tzinfo=dt.tzinfo or UTC).timestamp() * 1000) if dt else None


def card_of_case(case_id: str) -> str:
    """Case ids are ``<order id>-c<n>``: the card (and its Redis slot) is in the id."""
    order_id, sep, n = case_id.rpartition("-c")
    if not sep or not n.isdigit() or len(n) > 6:
        raise NotFound("no such after-sales case")
    try:
        return card_of_order(order_id)
    except NotFound:
        raise NotFound("no such after-sales case") from None


def case_view(c: CompactCase) -> dict[str, Any]:
    """The contract's case object from the JSON kept in Redis."""
    rs = c.get("rs")
    d, x = c.get("d"), c.get("x")
    return {
        "id": c["id"], "order_id": c["o"], "user_id": c["u"], "streamer_id": c["st"], "kind": c["k"],
        "status": c["s"], "reason": c["r"], "amount": money(int(c["a"])),
        "deadline": iso_ms(int(d)) if d else None,
        "created_at": iso_ms(int(c["c"])), "resolved_at": iso_ms(int(x)) if x else None,
        "return_shipment": ({"carrier": rs["c"], "tracking_no": rs["t"], "shipped_at": iso_ms(int(rs["at"]))}
                            if rs else None),
        "history": [{"status": h["s"], "by": h["by"], "at": iso_ms(int(h["at"])), "note": h.get("n", "")}
                    for h in c["h"]],
    }


class Metrics:
    """After-sales counters on the process's registry (``GET /metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cases = Counter("live_aftersale_cases_total", "After-sales case transitions, by kind and the "
                             "status entered", ["kind", "status"], registry=registry)
        self.resolution = Histogram("live_aftersale_resolution_seconds", "From request to the end of a case",
                                    ["kind", "status"], registry=registry,
                                    buckets=(1, 10, 60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400,
                                             15 * 86400, 30 * 86400))
        self.refunds = Counter("live_refunds_total", "Orders refunded, by what refunded them", ["via"],
                               registry=registry)
        self.refunded_cents = Counter("live_refunded_cents_total", "Money refunded, in cents", registry=registry)
        self.payments = Counter("live_payments_total", "Payments reported, by outcome", ["outcome"],
                                registry=registry)


class PostSale:
    """Scripts, keys, registry, persister, views and pushes of the orders after payment."""

    def __init__(self, svc: Services, flash: FlashService) -> None:
        self.svc = svc
        self.flash = flash
        self.redis = svc.redis
        lib = source("after_lib")
        # Each script carries the shared functions: still one atomic script per transition.
        self.scripts = {n: svc.redis.register_script(lib + "\n" + source(n)) for n in SCRIPTS}
        self.metrics = Metrics(svc.metrics.registry)
        self._streamers: dict[str, str] = {}
        s = svc.settings
        self.persister = StreamConsumer(
            svc.redis, group=keys.AFTER_GROUP, consumer=svc.proc_id, apply=self._apply, streams=self._streams,
            dead_key=lambda stream: stream.rsplit(":", 1)[0] + ":afterdead",
            on_dead=lambda stream: svc.metrics.dead_letters.labels("aftersales").inc(),
            batch=s.persister_batch, claim_idle_ms=s.persister_claim_idle_ms,
            max_deliveries=s.persister_max_deliveries, live_consumers=self._live_processes,
            claim_every_s=min(s.persister_claim_idle_ms / 2000, s.heartbeat_interval_s))

    # --- scripts -------------------------------------------------------------------------
    async def run(self, name: str, card_id: str, key_names: Sequence[str], args: Sequence[str | int]) -> list[str]:
        """Run one after-sales script on a card, registering the card for the sweeper and the
        persister before (so a crash after the script still leaves it registered) and after
        (so a concurrent retirement never drops it)."""
        await self._register(card_id)
        # The after-sales scripts answer a list of strings (see each script's header).
        res = cast(list[str | bytes], await self.scripts[name](keys=[self.key(card_id, k) for k in key_names],
                                                            args=list(args)))
        await self._register(card_id)
        out = [r.decode() if isinstance(r, bytes) else r for r in res]
        if out and out[0] == "FENCED":
            # The card is being rebuilt (docs/operations.md, fencing): nothing changed; the
            # caller retries (a request answers UNAVAILABLE, a sweeper tries again next round).
            raise Unavailable(FENCED_MESSAGE)
        if "due" in key_names:
            await self.note_next(card_id)
        return out

    async def _first_due(self, card_id: str) -> float | None:
        first = cast(list[tuple[str, float]],
                     await self.redis.zrange(keys.card_after_due(card_id), 0, 0, withscores=True))
        return float(first[0][1]) if first else None

    async def note_next(self, card_id: str) -> None:
        """Lower the card's entry in the global next-due index to its earliest deadline (LT: a
        concurrent, earlier entry is never raised)."""
        first = await self._first_due(card_id)
        if first is not None:
            await self.redis.zadd(keys.AFTER_NEXT, {card_id: first}, lt=True)

    async def reset_next(self, card_id: str) -> None:
        """After the sweeper handled a card: its entry becomes its earliest deadline, or goes.
        Set, then look again and lower: a script that added an earlier deadline meanwhile is
        never hidden behind a later time."""
        first = await self._first_due(card_id)
        if first is None:
            await self.redis.zrem(keys.AFTER_NEXT, card_id)
        else:
            await self.redis.zadd(keys.AFTER_NEXT, {card_id: first})
        await self.note_next(card_id)

    async def next_cards(self, now: int, limit: int = 500) -> list[str]:
        """Cards with a deadline due by ``now`` (the global index)."""
        return cast(list[str], await self.redis.zrangebyscore(keys.AFTER_NEXT, "-inf", now, start=0, num=limit))

    async def _register(self, card_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(keys.AFTER_CARDS, card_id)
        pipe.sadd(keys.AFTER_DIRTY, card_id)
        await pipe.execute()

    @staticmethod
    def key(card_id: str, name: str) -> str:
        return {
            "state": keys.card_state, "bought": keys.card_bought, "orders": keys.card_orders,
            "deadlines": keys.card_deadlines, "cases": keys.card_cases, "due": keys.card_after_due,
            "stream": keys.card_after_stream, "txns": keys.card_txns,
        }[name](card_id)

    # --- reading -------------------------------------------------------------------------
    async def order(self, card_id: str, order_id: str) -> CompactOrder | None:
        raw = cast(str | None, await self.redis.hget(keys.card_orders(card_id), order_id))
        return parse_order(raw) if raw else None

    async def case(self, card_id: str, case_id: str) -> CompactCase | None:
        raw = cast(str | None, await self.redis.hget(keys.card_cases(card_id), case_id))
        return parse_case(raw) if raw else None

    async def streamer_of(self, card_id: str) -> str:
        """The card's streamer (cached: a card never changes hands)."""
        sid = self._streamers.get(card_id)
        if sid is None:
            async with self.svc.db() as s:
                row = (await s.execute(select(Room.streamer_id).join(Card, Card.room_id == Room.id)
                                       .where(Card.id == card_id))).first()
            if row is None:
                raise NotFound("no such card")
            sid = self._streamers[card_id] = row[0]
        return sid

    # --- effects of a transition ---------------------------------------------------------------
    async def announce(self, card_id: str, order_raw: str = "", case_raw: str = "",
                       card_status: str = "") -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Push the new order and case to the buyer and the card's streamer (every process),
        and the card's stock when units came back."""
        streamer = await self.streamer_of(card_id)
        order = order_view(card_id, parse_order(order_raw)) if order_raw else None
        case = case_view(parse_case(case_raw)) if case_raw else None
        if order is not None and order["stock_returned"] and order["status"] in ("refunded", "expired"):
            room_id = await self.flash.room_of(card_id)
            self.flash.mark_dirty(card_id, room_id)
            if card_status:
                await self.flash.status_changed(room_id, card_id, card_status)
        for event, data in (("order:update", order), ("aftersale:update", case)):
            if data is None:
                continue
            for user in dict.fromkeys((data["user_id"], streamer)):
                await self.svc.pusher.to_user(user, event, data)
        return order, case

    def count_case(self, case: CompactCase) -> None:
        self.metrics.cases.labels(case["k"], case["s"]).inc()
        if case["s"] in ("refunded", "closed"):
            self.metrics.resolution.labels(case["k"], case["s"]).observe(max(0, now_ms() - int(case["c"])) / 1000)

    def count_refund(self, via: str, cents: int) -> None:
        self.metrics.refunds.labels(via).inc()
        self.metrics.refunded_cents.inc(cents)

    # --- persistence ---------------------------------------------------------------------------
    async def _live_processes(self) -> set[str]:
        cutoff = now_ms() - int(self.svc.settings.heartbeat_dead_after_s * 1000)
        return set(cast(list[str], await self.redis.zrangebyscore(keys.PROCS, cutoff, "+inf"))) | {self.svc.proc_id}

    async def cards(self) -> list[str]:
        return list(cast(set[str], await self.redis.smembers(keys.AFTER_CARDS)))

    async def _streams(self) -> list[str]:
        """Only streams that may hold entries: the persister's idle rounds stay cheap however
        many cards wait for deadlines."""
        return [keys.card_after_stream(c) for c in cast(set[str], await self.redis.smembers(keys.AFTER_DIRTY))]

    async def clean_dirty(self) -> None:
        """Cards whose stream is empty leave the persister's set (remove, then look again: an
        entry appended meanwhile puts the card back; its writer re-adds it after writing too)."""
        for card_id in cast(set[str], await self.redis.smembers(keys.AFTER_DIRTY)):
            if await self.backlog(card_id):
                continue
            await self.redis.srem(keys.AFTER_DIRTY, card_id)
            if await self.backlog(card_id):
                await self.redis.sadd(keys.AFTER_DIRTY, card_id)

    async def flush(self, timeout: float = 2.0, *, claim: bool = False) -> None:
        """Persist what the after-sales streams hold now (before reading lists from SQL)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.persister.drain_once(claim=claim)
                # The persister loop shares our consumer name: entries it read between our
                # "own pending" and "new" reads are still uncommitted. A second pass re-reads
                # them as pending and commits them (idempotently) before we answer.
                await self.persister.drain_once()

    async def backlog(self, card_id: str) -> int:
        return int(cast(int, await self.redis.xlen(keys.card_after_stream(card_id))))

    async def _apply(self, stream: str, entries: list[Entry]) -> None:
        """Write a batch of one card's order/case versions and payments in one transaction.

        Idempotent and order-free: a row only ever moves to a newer version, history steps and
        payments are inserted once by their keys.
        """
        card_id = stream.split("{card:", 1)[1].split("}", 1)[0]
        orders: dict[str, CompactOrder] = {}
        cases: dict[str, CompactCase] = {}
        pays: dict[str, dict[str, Any]] = {}
        versions: list[tuple[str, CompactOrder | CompactCase]] = []  # every version, in stream order (webhooks)
        for _, f in entries:
            t = f.get("t")
            if t == "order":
                o = parse_order(f["o"])
                versions.append(("order", o))
                if o["id"] not in orders or orders[o["id"]]["v"] < o["v"]:
                    orders[o["id"]] = o
            elif t == "case":
                c = parse_case(f["c"])
                versions.append(("case", c))
                if c["id"] not in cases or cases[c["id"]]["v"] < c["v"]:
                    cases[c["id"]] = c
            elif t == "pay":
                pays[f["tx"]] = {"transaction_id": f["tx"], "order_id": f["id"], "amount_cents": int(f["a"]),
                                 "outcome": f["r"], "at": _dt(int(f["at"]))}
        room_id = await self.flash.room_of(card_id) if orders else ""
        streamer = await self.streamer_of(card_id) if cases or orders else ""
        async with self.svc.db() as s, s.begin():
            # The events are the difference from what SQL held, so they are worked out before the
            # upserts; they are written after them, so that every writer takes the order row's lock
            # before the outbox's dedupe key (the order persister does too): no lock-order deadlock.
            events = await self._events(s, card_id, room_id, streamer, versions) if versions else []
            if orders:
                await self._upsert(s, Order, [self._order_row(card_id, room_id, o) for o in orders.values()],
                                   versioned=True)
            if cases:
                await self._upsert(s, AfterSaleCase, [self._case_row(card_id, streamer, c) for c in cases.values()],
                                   versioned=True)
                steps = [{"case_id": c["id"], "seq": i, "status": h["s"], "by": h["by"], "at": _dt(int(h["at"])),
                          "note": str(h.get("n", ""))[:500]}
                         for c in cases.values() for i, h in enumerate(c["h"])]
                await self._upsert(s, AfterSaleStep, steps, versioned=False)
            if pays:
                await self._upsert(s, Payment, list(pays.values()), versioned=False)
            await outbox.emit_many(s, events)

    async def _events(self, s: AsyncSession, card_id: str, room_id: str, shop: str,
                      versions: list[tuple[str, CompactOrder | CompactCase]]) -> list[outbox.Event]:
        """Webhook events of a batch, in the batch's transaction (they exist iff it commits).

        Each version is compared with the one before it — SQL's row for the first — so a batch
        holding paid, shipped and completed versions reports all three, in that order; versions
        SQL already has (a replayed entry) report nothing, and every event's dedupe key names its
        fact, so two processes writing versions of one order at once still report each once."""
        order_ids = sorted({v["id"] for k, v in versions if k == "order"})
        case_ids = sorted({v["id"] for k, v in versions if k == "case"})
        known: dict[str, dict[str, Any]] = {}
        seen_steps: dict[str, int] = {}
        if order_ids:
            rows = await s.execute(select(*outbox.ORDER_FACTS).where(Order.id.in_(order_ids)))
            known = {r.id: dict(r._mapping) for r in rows}
        if case_ids:
            rows2 = await s.execute(select(AfterSaleStep.case_id, func.count()).where(
                AfterSaleStep.case_id.in_(case_ids)).group_by(AfterSaleStep.case_id))
            seen_steps = {cid: int(n) for cid, n in rows2.all()}
        events: list[outbox.Event] = []
        for kind, v in versions:
            if kind == "order":
                row = self._order_row(card_id, room_id, cast(CompactOrder, v))  # kind says which
                prev = known.get(v["id"])
                if prev is not None and prev["version"] is not None and prev["version"] >= row["version"]:
                    continue  # SQL has this version or a newer one: its facts were reported
                events += outbox.order_changes(shop, prev, row)
                known[v["id"]] = row
            else:
                cv = cast(CompactCase, v)
                case = self._case_row(card_id, shop, cv)
                steps = [{"status": h["s"], "by": h["by"], "at": _dt(int(h["at"])), "note": str(h.get("n", ""))}
                         for h in cv["h"]]
                first = seen_steps.get(v["id"], 0)
                events += outbox.case_steps(shop, case, steps, first)
                seen_steps[v["id"]] = max(first, len(steps))
        return events

    @staticmethod
    async def _upsert(s: AsyncSession, model: type[Base], rows: list[dict[str, Any]], *, versioned: bool) -> None:
        table = cast(Table, model.__table__)
        ins = postgresql.insert(table) if s.get_bind().dialect.name == "postgresql" else sqlite.insert(table)
        pk = [c.name for c in table.primary_key.columns]
        if versioned:
            cols = [k for k in rows[0] if k not in pk]
            stmt = ins.on_conflict_do_update(index_elements=pk, set_={k: ins.excluded[k] for k in cols},
                                             where=table.c.version < ins.excluded.version)
        else:
            stmt = ins.on_conflict_do_nothing(index_elements=pk)
        await s.execute(stmt, rows)

    @staticmethod
    def _order_row(card_id: str, room_id: str, o: CompactOrder) -> dict[str, Any]:
        sh = o.get("sh")
        return {
            "id": o["id"], "card_id": card_id, "room_id": room_id, "user_id": o["u"], "request_id": o["r"],
            "qty": int(o["q"]), "amount_cents": int(o["a"]), "status": o["s"], "created_at": _dt(int(o["c"])),
            "pay_by": _dt(int(o["p"])), "updated_at": utcnow(), "paid_amount_cents": int(o.get("pa", 0)),
            "refunded_amount_cents": int(o.get("ra", 0)), "stock_returned": bool(o.get("sr")),
            "carrier": sh.get("c") if sh else None, "tracking_no": sh.get("t") if sh else None,
            "shipped_at": _dt(sh.get("at")) if sh else None,
            "paid_at": _dt(o.get("pt")), "completed_at": _dt(o.get("cp")), "refunded_at": _dt(o.get("rt")),
            "after_sale_id": o.get("as"), "version": int(o["v"]),
        }

    @staticmethod
    def _case_row(card_id: str, streamer: str, c: CompactCase) -> dict[str, Any]:
        rs = c.get("rs")
        return {
            "id": c["id"], "order_id": c["o"], "card_id": card_id, "user_id": c["u"], "streamer_id": streamer,
            "kind": c["k"], "status": c["s"], "reason": c["r"], "amount_cents": int(c["a"]),
            "deadline": _dt(c.get("d")), "return_carrier": rs.get("c") if rs else None,
            "return_tracking_no": rs.get("t") if rs else None,
            "created_at": _dt(int(c["c"])), "resolved_at": _dt(c.get("x")), "version": int(c["v"]),
        }

    # --- recovery (Redis lost the card: rebuilt from SQL) ---------------------------------------
    async def restore(self, card_id: str, orders: list[Order]) -> None:
        """Rewrite the card's cases, due index and payment transactions from SQL, after
        ``OrderService.rebuild`` rewrote its orders (which persisted our stream first)."""
        async with self.svc.db() as s:
            cases = list((await s.execute(select(AfterSaleCase).where(AfterSaleCase.card_id == card_id))).scalars())
            ids = [c.id for c in cases]
            steps = list((await s.execute(select(AfterSaleStep).where(AfterSaleStep.case_id.in_(ids))
                                          .order_by(AfterSaleStep.seq))).scalars()) if ids else []
            order_ids = [o.id for o in orders]
            txns = list((await s.execute(select(Payment.transaction_id, Payment.order_id)
                                         .where(Payment.order_id.in_(order_ids)))).all()) if order_ids else []
        history: dict[str, list[CaseStep]] = {i: [] for i in ids}
        for st in steps:
            history[st.case_id].append({"s": st.status, "by": st.by, "at": cast(int, _ms(st.at)), "n": st.note})
        open_orders = {c.order_id for c in cases if c.status in OPEN_CASE}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.card_cases(card_id), keys.card_after_due(card_id), keys.card_txns(card_id))
        for c in cases:
            raw: dict[str, Any] = {
                "id": c.id, "o": c.order_id, "u": c.user_id, "st": c.streamer_id, "k": c.kind, "s": c.status,
                "r": c.reason, "a": c.amount_cents, "c": _ms(c.created_at), "d": _ms(c.deadline) or 0,
                "h": history[c.id], "v": c.version}
            if c.return_carrier:
                raw["rs"] = {"c": c.return_carrier, "t": c.return_tracking_no or "", "at": 0}
            if c.resolved_at:
                raw["x"] = _ms(c.resolved_at)
            pipe.hset(keys.card_cases(card_id), c.id, orjson.dumps(raw))
            if c.status in OPEN_CASE and c.deadline:
                pipe.zadd(keys.card_after_due(card_id), {f"c:{c.id}": cast(int, _ms(c.deadline))})
        auto_ms = int(self.svc.settings.auto_confirm_s * 1000)
        for o in orders:
            if o.status == "shipped" and o.shipped_at and o.id not in open_orders:
                pipe.zadd(keys.card_after_due(card_id), {f"o:{o.id}": (_ms(o.shipped_at) or 0) + auto_ms})
        for tx, order_id in txns:
            pipe.hset(keys.card_txns(card_id), tx, order_id)
        await pipe.execute()
        await self.redis.sadd(keys.AFTER_CARDS, card_id)
        await self.note_next(card_id)

    # --- the due-time index ------------------------------------------------------------------
    async def due(self, card_id: str, now: int, limit: int = 500) -> list[str]:
        return cast(list[str], await self.redis.zrangebyscore(keys.card_after_due(card_id), "-inf", now,
                                                              start=0, num=limit))

    async def retire_idle(self) -> None:
        """The slow, full pass over every registered card: each one's entry in the next-due index
        is lowered to its earliest deadline (mends an entry a crash left too late or missing),
        and cards with no deadline and nothing to persist leave the registry. Remove first, then
        look: a script that ran meanwhile re-adds its card after it ran, and anything still
        pending puts the card back here."""
        for card_id in await self.cards():
            await self.note_next(card_id)
            if await self.redis.zcard(keys.card_after_due(card_id)) or await self.backlog(card_id):
                continue
            await self.redis.srem(keys.AFTER_CARDS, card_id)
            if await self.redis.zcard(keys.card_after_due(card_id)) or await self.backlog(card_id):
                await self.redis.sadd(keys.AFTER_CARDS, card_id)

    async def register_from_sql(self) -> None:
        """At start-up: cards SQL knows to have shipped orders or open cases are (re)registered,
        so that no deadline is forgotten after a crash or a Redis restart."""
        async with self.svc.db() as s:
            ids = set((await s.execute(select(Order.card_id).where(Order.status == "shipped").distinct())).scalars())
            ids |= set((await s.execute(select(AfterSaleCase.card_id)
                                        .where(AfterSaleCase.status.in_(OPEN_CASE)).distinct())).scalars())
        if ids:
            await self.redis.sadd(keys.AFTER_CARDS, *ids)
        for card_id in ids:
            await self.note_next(card_id)


def holds_stock_sql() -> ColumnElement[bool]:
    """SQL form of :func:`holds_stock` on the orders table."""
    from sqlalchemy import and_

    return and_(Order.status.notin_(RETURNED_BY_STATUS), Order.stock_returned.is_(False))


def compact_extra(row: Order) -> dict[str, Any]:
    """The after-payment fields of a compact Redis order, from its SQL row (for a rebuild)."""
    extra: dict[str, Any] = {"v": row.version, "pa": row.paid_amount_cents, "ra": row.refunded_amount_cents,
                             "sr": 1 if row.stock_returned else 0}
    if row.shipped_at:
        extra["sh"] = {"c": row.carrier or "", "t": row.tracking_no or "", "at": _ms(row.shipped_at)}
    if row.after_sale_id:  # case ids count up per order: a new one must not reuse an old id
        extra["nc"] = int(row.after_sale_id.rpartition("-c")[2])
    for k, v in (("as", row.after_sale_id), ("pt", _ms(row.paid_at)), ("cp", _ms(row.completed_at)),
                 ("rt", _ms(row.refunded_at))):
        if v:
            extra[k] = v
    return extra
