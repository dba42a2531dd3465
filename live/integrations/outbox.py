"""The transactional outbox: an event is a row written in the same SQL transaction as the
change it reports, so it exists if and only if the change committed. The webhook sender
(``live.integrations.webhooks``) reads the table afterwards; a crash between commit and send
loses nothing, because the row is still there.

Other domains call :func:`emit` (or a helper below) with their open ``AsyncSession``, inside
``async with session.begin()``; never after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from live.core.ids import iso, new_id, utcnow
from live.core.models import Card, Order, OutboxEvent, Room

EVENTS: tuple[str, ...] = (
    "order.created", "order.paid", "order.shipped", "order.completed", "order.refunded",
    "aftersale.updated", "card.sold_out", "room.live", "room.ended",
)

# (type, shop id, data, ordering key, dedupe key): one event for :func:`emit_many`.
Event = tuple[str, str | None, Mapping[str, Any], str, str | None]


async def emit(session: AsyncSession, type: str, shop_id: str | None, data: Mapping[str, Any],
               ordering_key: str, *, dedupe_key: str | None = None) -> None:
    """Record event ``type`` about shop ``shop_id`` (the streamer's user id; None: platform
    subscriptions only) in ``session``'s transaction. Events sharing ``ordering_key`` (an
    order id, a room id) reach each endpoint in emit order. With ``dedupe_key``, emitting the
    same fact again (a replayed stream entry) records nothing."""
    await emit_many(session, [(type, shop_id, data, ordering_key, dedupe_key)])


async def emit_many(session: AsyncSession,
                    events: Iterable[Event]) -> None:
    """:func:`emit` for several events in one statement: ``(type, shop_id, data, ordering_key,
    dedupe_key)`` each."""
    now = utcnow()
    rows = []
    for type_, shop_id, data, key, dedupe in events:
        if type_ not in EVENTS:
            raise ValueError(f"unknown event type {type_!r}")
        rows.append({"id": new_id(), "type": type_, "shop_id": shop_id, "ordering_key": key[:64],
                     "dedupe_key": dedupe, "data": dict(data), "created_at": now, "fanned_out": False})
    if not rows:
        return
    table = cast(Table, OutboxEvent.__table__)
    dialect = session.get_bind().dialect.name
    ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    await session.execute(ins.on_conflict_do_nothing(index_elements=["dedupe_key"]), rows)


async def _shop_of_card(session: AsyncSession, card_id: str) -> str | None:
    return cast(str | None, (await session.execute(
        select(Room.streamer_id).join(Card, Card.room_id == Room.id).where(Card.id == card_id))).scalar())


def _created(card_id: str, r: Mapping[str, Any], status: str) -> Event:
    return ("order.created", None,
            {"order_id": r["id"], "card_id": card_id, "room_id": r["room_id"], "user_id": r["user_id"],
             "qty": r["qty"], "amount_cents": r["amount_cents"], "status": status,
             "created_at": iso(r["created_at"])},
            r["id"], f"order.created:{r['id']}")


async def orders_created(session: AsyncSession, card_id: str, rows: list[dict[str, Any]]) -> None:
    """``order.created`` for each order row the persister writes (keyed by order id, so a
    replayed batch adds no second event)."""
    if not rows:
        return
    shop = await _shop_of_card(session, card_id)
    await emit_many(session, [_with_shop(_created(card_id, r, r["status"]), shop) for r in rows])


def _with_shop(ev: Event, shop: str | None) -> Event:
    return (ev[0], shop, ev[2], ev[3], ev[4])


# The orders columns :func:`order_changes` compares (the after-sales writer reads them from SQL
# before it writes a newer version of the row).
ORDER_FACTS = (Order.id, Order.card_id, Order.room_id, Order.user_id, Order.qty, Order.amount_cents,
               Order.status, Order.created_at, Order.paid_at, Order.paid_amount_cents, Order.carrier,
               Order.tracking_no, Order.shipped_at, Order.completed_at, Order.refunded_amount_cents,
               Order.refunded_at, Order.stock_returned, Order.after_sale_id, Order.version)


def order_changes(shop: str | None, prev: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Event]:
    """The ``order.*`` events between two versions of an order row (``prev`` None: SQL has no
    row yet), in the order they happen: created, paid, shipped, completed, refunded.

    Each names a fact that happens once per order (a refund: once per refunded total, which
    only grows), so its dedupe key makes a replayed or out-of-order version record nothing
    twice; and a version carries every earlier fact (``paid_at`` stays set once shipped), so a
    writer that sees only a newer version still reports the earlier facts first."""
    oid = new["id"]
    base = {"order_id": oid, "card_id": new["card_id"], "room_id": new["room_id"], "user_id": new["user_id"],
            "status": new["status"], "version": new["version"]}
    out: list[Event] = []
    if prev is None:  # the order persister may not have written it yet: created comes first
        out.append(_with_shop(_created(new["card_id"], new, "pending_payment"), shop))

    def newly(col: str) -> bool:
        return new.get(col) is not None and (prev is None or prev.get(col) is None)

    if newly("paid_at"):
        out.append(("order.paid", shop, {**base, "amount_cents": new["amount_cents"],
                                         "paid_amount_cents": new["paid_amount_cents"],
                                         "paid_at": iso(new["paid_at"])}, oid, f"order.paid:{oid}"))
    if newly("shipped_at"):
        out.append(("order.shipped", shop, {**base, "carrier": new["carrier"], "tracking_no": new["tracking_no"],
                                            "shipped_at": iso(new["shipped_at"])}, oid, f"order.shipped:{oid}"))
    if newly("completed_at"):
        out.append(("order.completed", shop, {**base, "completed_at": iso(new["completed_at"])},
                    oid, f"order.completed:{oid}"))
    before = int(prev["refunded_amount_cents"] or 0) if prev is not None else 0
    total = int(new["refunded_amount_cents"] or 0)
    if total > before:
        out.append(("order.refunded", shop,
                    {**base, "refund_cents": total - before, "refunded_total_cents": total,
                     "paid_amount_cents": new["paid_amount_cents"], "refunded_at": iso(new["refunded_at"]),
                     "stock_returned": bool(new["stock_returned"]), "after_sale_id": new["after_sale_id"]},
                    oid, f"order.refunded:{oid}:{total}"))
    return out


def case_steps(shop: str | None, case: Mapping[str, Any], steps: Sequence[Mapping[str, Any]],
               first: int = 0) -> list[Event]:
    """``aftersale.updated`` for each step of a case's history from index ``first`` on (a step
    is a state change; its index names it, so a replay records nothing twice). Ordered by the
    case's order id, with the order's own events."""
    return [("aftersale.updated", shop,
             {"case_id": case["id"], "order_id": case["order_id"], "card_id": case["card_id"],
              "user_id": case["user_id"], "kind": case["kind"], "status": st["status"],
              "amount_cents": case["amount_cents"], "step": i, "by": st["by"], "at": iso(st["at"]),
              "note": st["note"]},
             case["order_id"], f"aftersale.updated:{case['id']}:{i}")
            for i, st in enumerate(steps) if i >= first]


async def card_sold_out(session: AsyncSession, card: Card, sell_out: str | None = None) -> None:
    """``card.sold_out`` once per sell-out: ``sell_out`` names it (the stream entry of the buy
    that took the last unit); without it, once per card and stock level (a restocked card may
    sell out again)."""
    shop = await _shop_of_card(session, card.id)
    await emit(session, "card.sold_out", shop,
               {"card_id": card.id, "room_id": card.room_id, "title": card.title,
                "stock": card.stock + card.restocked},
               card.id, dedupe_key=f"card.sold_out:{card.id}:{sell_out or card.stock + card.restocked}")


async def room_status(session: AsyncSession, room: Room, status: str, at: datetime) -> None:
    """``room.live`` / ``room.ended``: ``room`` moved to ``status`` at ``at``, in the caller's
    transaction (the row itself may not show the change yet: it was made by an UPDATE)."""
    type_ = "room.live" if status == "live" else "room.ended"
    started = at if status == "live" else room.started_at
    await emit(session, type_, room.streamer_id,
               {"room_id": room.id, "title": room.title, "status": status,
                "started_at": iso(started), "ended_at": iso(at) if status == "ended" else None},
               room.id, dedupe_key=f"{type_}:{room.id}")
