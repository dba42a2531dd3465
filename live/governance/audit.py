"""The server's own audit of a sale window, for rehearsals (``python -m live.loadtest double11``
and its verdict, ``live.loadtest.verdict11``): read-only figures from SQL, for moderators.

Each section answers one question the verdict asks, from the records the server keeps anyway:

- ``money``: per shop, what its buyers paid minus what went back (the orders' ``paid_amount_cents``
  and ``refunded_amount_cents``) next to the shop ledger's ``sale`` and ``refund`` entries of
  those orders, and the orders where the two differ;
- ``deadlines``: every after-sales deadline that fired (a case step ``by = "system"``), the ones
  that fired twice, early, or not at all, and shipped orders left past their auto-confirm time
  (docs/after-sales.md: a deadline is set when a case enters ``requested``, ``rejected``,
  ``awaiting_return`` or ``returned`` and fires at most once, as the very next step; a ``system``
  step after any other status fired a deadline that was already spent);
- ``webhooks``: per webhook, the events the server emitted to it since the window opened (the
  outbox rows its subscription matches), how many are not yet fanned out, and its deliveries by
  status;
- ``chat``: private-trading refusals (the guard's ``violations`` rows) in the rooms of the window,
  next to the public disclosure's figure (``Transparency.compute``, the code behind
  ``GET /api/transparency``) for the same window.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from live.core.auth import Principal
from live.core.errors import Forbidden
from live.core.ids import iso, utcnow
from live.core.models import (
    AfterSaleCase,
    AfterSaleStep,
    Card,
    LedgerEntry,
    Order,
    OutboxEvent,
    Room,
    Violation,
    Webhook,
    WebhookDelivery,
)

if TYPE_CHECKING:
    from live.app.services import Services

SECTIONS = ("money", "deadlines", "webhooks", "chat")
# Case statuses that carry a deadline, and the setting that says how long it runs.
DEADLINE_OF = {"requested": "after_sales_reply_s", "rejected": "after_sales_reply_s",
               "awaiting_return": "return_ship_s", "returned": "return_receive_s"}
LIST_MAX = 50  # ids listed per problem (the counts are complete)
EARLY_TOLERANCE = timedelta(seconds=1)  # clocks of the processes and SQL's timestamp precision


def _aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored in UTC)."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class Audit:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def window(self, who: Principal, *, since: datetime, card_ids: list[str], shop_ids: list[str],
                     room_ids: list[str], webhook_ids: list[str], sections: list[str]) -> dict[str, Any]:
        """The sections asked for, over the window from ``since`` to now (moderators only)."""
        if not who.is_moderator:
            raise Forbidden("moderators only")
        # What is still in the Redis streams is not yet a record: write it to SQL first.
        await self.svc.orders.flush(claim=True)
        aftersales = getattr(self.svc, "aftersales", None)  # None when that domain is not installed
        if aftersales is not None:
            await aftersales.post.flush(claim=True)
        now = utcnow()
        out: dict[str, Any] = {"since": iso(since), "at": iso(now)}
        if "money" in sections:
            out["money"] = await self.money(card_ids, shop_ids)
        if "deadlines" in sections:
            out["deadlines"] = await self.deadlines(card_ids, now)
        if "webhooks" in sections:
            out["webhooks"] = await self.webhooks(webhook_ids, since)
        if "chat" in sections:
            out["chat"] = await self.chat(room_ids, since, now)
        return out

    async def money(self, card_ids: list[str], shop_ids: list[str]) -> dict[str, Any]:
        async with self.svc.db() as s:
            rows = (await s.execute(
                select(Order.id, Order.paid_amount_cents, Order.refunded_amount_cents, Room.streamer_id)
                .join(Card, Card.id == Order.card_id).join(Room, Room.id == Card.room_id)
                .where(Order.card_id.in_(card_ids)))).all() if card_ids else []
            ids = [r.id for r in rows]
            ledger: dict[str, int] = defaultdict(int)
            ledger_shop: dict[str, str] = {}
            for i in range(0, len(ids), 500):
                for order_id, user_id, cents in (await s.execute(
                        select(LedgerEntry.order_id, LedgerEntry.user_id, func.sum(LedgerEntry.amount_cents))
                        .where(LedgerEntry.order_id.in_(ids[i:i + 500]), LedgerEntry.kind.in_(("sale", "refund")))
                        .group_by(LedgerEntry.order_id, LedgerEntry.user_id))).all():
                    ledger[str(order_id)] += int(cents)
                    ledger_shop[str(order_id)] = str(user_id)
        shops: dict[str, dict[str, int]] = {sid: {"paid_cents": 0, "refunded_cents": 0, "net_cents": 0,
                                                  "ledger_cents": 0, "orders": 0} for sid in shop_ids}
        mismatched: list[dict[str, Any]] = []
        for r in rows:
            shop = shops.setdefault(r.streamer_id, {"paid_cents": 0, "refunded_cents": 0, "net_cents": 0,
                                                    "ledger_cents": 0, "orders": 0})
            net = int(r.paid_amount_cents) - int(r.refunded_amount_cents)
            got = ledger.get(r.id, 0)
            shop["orders"] += 1
            shop["paid_cents"] += int(r.paid_amount_cents)
            shop["refunded_cents"] += int(r.refunded_amount_cents)
            shop["net_cents"] += net
            shop["ledger_cents"] += got
            wrong_shop = r.id in ledger_shop and ledger_shop[r.id] != r.streamer_id
            if got != net or wrong_shop:
                mismatched.append({"order_id": r.id, "net_cents": net, "ledger_cents": got,
                                   "ledger_shop": ledger_shop.get(r.id)})
        return {"shops": shops, "mismatched_orders": len(mismatched), "mismatched": mismatched[:LIST_MAX]}

    async def deadlines(self, card_ids: list[str], now: datetime) -> dict[str, Any]:
        st = self.svc.settings
        grace = timedelta(seconds=max(5.0, 3 * st.sweeper_interval_s))
        async with self.svc.db() as s:
            cases = list((await s.execute(select(AfterSaleCase).where(AfterSaleCase.card_id.in_(card_ids))))
                         .scalars()) if card_ids else []
            ids = [c.id for c in cases]
            steps: dict[str, list[AfterSaleStep]] = defaultdict(list)
            for i in range(0, len(ids), 500):
                for step in (await s.execute(select(AfterSaleStep).where(AfterSaleStep.case_id.in_(ids[i:i + 500]))
                                             .order_by(AfterSaleStep.case_id, AfterSaleStep.seq))).scalars():
                    steps[step.case_id].append(step)
        fired = 0
        double: list[dict[str, Any]] = []
        early: list[dict[str, Any]] = []
        missed: list[dict[str, Any]] = []
        for c in cases:
            history = steps[c.id]
            for prev, step in pairwise(history):
                if step.by != "system":
                    continue
                fired += 1
                setting = DEADLINE_OF.get(prev.status)
                if setting is None:  # the deadline this step fires was already spent
                    double.append({"case_id": c.id, "seq": step.seq, "after": prev.status})
                    continue
                due = _aware(prev.at) + timedelta(seconds=getattr(st, setting))
                if _aware(step.at) < due - EARLY_TOLERANCE:
                    early.append({"case_id": c.id, "seq": step.seq, "due": iso(due), "at": iso(_aware(step.at))})
            if c.status in DEADLINE_OF and c.deadline is not None and _aware(c.deadline) + grace < now:
                missed.append({"case_id": c.id, "status": c.status, "deadline": iso(_aware(c.deadline))})
        # Auto-confirm (a shipped order completes ``auto_confirm_s`` after shipping) is a deadline
        # too; its fire is ``completed_at``, set once. An order that ever had a case is left out:
        # an open case pushes its deadline back (after-sales.md), so only the case's steps tell.
        overdue = now - timedelta(seconds=st.auto_confirm_s) - grace
        async with self.svc.db() as s:
            unconfirmed = list((await s.execute(select(Order.id, Order.shipped_at).where(
                Order.card_id.in_(card_ids), Order.status == "shipped", Order.after_sale_id.is_(None),
                Order.shipped_at < overdue))).all()) if card_ids else []
        missed += [{"order_id": r.id, "status": "shipped", "deadline":
                    iso(_aware(r.shipped_at) + timedelta(seconds=st.auto_confirm_s))} for r in unconfirmed]
        return {"cases": len(cases), "fired": fired, "double_fired": len(double), "early": len(early),
                "missed": len(missed), "double_fired_steps": double[:LIST_MAX], "early_steps": early[:LIST_MAX],
                "missed_cases": missed[:LIST_MAX], "grace_s": grace.total_seconds()}

    async def webhooks(self, webhook_ids: list[str], since: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with self.svc.db() as s:
            for hook_id in webhook_ids:
                hook = await s.get(Webhook, hook_id)
                if hook is None:
                    out[hook_id] = {"found": False}
                    continue
                start = max(since, _aware(hook.created_at))
                where = [OutboxEvent.created_at >= start, OutboxEvent.type.in_(list(hook.events))]
                if hook.shop_id is not None:
                    where.append(OutboxEvent.shop_id == hook.shop_id)
                events = (await s.execute(select(OutboxEvent.id, OutboxEvent.type, OutboxEvent.fanned_out)
                                          .where(*where).order_by(OutboxEvent.seq))).all()
                by_status = {str(k): int(n) for k, n in (await s.execute(
                    select(WebhookDelivery.status, func.count()).where(WebhookDelivery.webhook_id == hook_id)
                    .group_by(WebhookDelivery.status))).all()}
                types: dict[str, int] = defaultdict(int)
                for e in events:
                    types[e.type] += 1
                out[hook_id] = {
                    "found": True, "shop_id": hook.shop_id, "since": iso(start),
                    "event_ids": [e.id for e in events], "events_by_type": dict(types),
                    "not_fanned_out": sum(1 for e in events if not e.fanned_out), "deliveries": by_status,
                }
        return out

    async def chat(self, room_ids: list[str], since: datetime, now: datetime) -> dict[str, Any]:
        async with self.svc.db() as s:
            rows = (await s.execute(select(Violation.room_id, Violation.kind, func.count()).where(
                Violation.reason == "private_trading", Violation.created_at >= since,
                Violation.room_id.in_(room_ids)).group_by(Violation.room_id, Violation.kind))).all() if room_ids else []
        by_room: dict[str, dict[str, int]] = defaultdict(dict)
        for room, kind, n in rows:
            by_room[str(room)][str(kind)] = int(n)
        # The public disclosure's own computation, over this window instead of a month.
        figures = await self.svc.governance.transparency.compute("window", since, now + timedelta(seconds=1))
        return {"private_trading_blocked": sum(n for kinds in by_room.values() for n in kinds.values()),
                "private_trading_blocked_chat": sum(kinds.get("chat", 0) for kinds in by_room.values()),
                "by_room": by_room, "transparency_window": figures["private_trading"]}


def install(svc: Services) -> None:
    """The audit reads only: no loops, no scripts."""
    svc.audit = Audit(svc)
