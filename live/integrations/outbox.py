"""The transactional outbox: an event is a row written in the same SQL transaction as the
change it reports, so it exists if and only if the change committed. The webhook sender
(``live.integrations.webhooks``) reads the table afterwards; a crash between commit and send
loses nothing, because the row is still there.

Other domains call :func:`emit` (or a helper below) with their open ``AsyncSession``, inside
``async with session.begin()``; never after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from live.core.ids import iso, new_id, utcnow
from live.core.models import Card, OutboxEvent, Room

EVENTS: tuple[str, ...] = (
    "order.created", "order.paid", "order.shipped", "order.completed", "order.refunded",
    "aftersale.updated", "card.sold_out", "room.live", "room.ended",
)


async def emit(session: AsyncSession, type: str, shop_id: str | None, data: Mapping[str, Any],
               ordering_key: str, *, dedupe_key: str | None = None) -> None:
    """Record event ``type`` about shop ``shop_id`` (the streamer's user id; None: platform
    subscriptions only) in ``session``'s transaction. Events sharing ``ordering_key`` (an
    order id, a room id) reach each endpoint in emit order. With ``dedupe_key``, emitting the
    same fact again (a replayed stream entry) records nothing."""
    await emit_many(session, [(type, shop_id, data, ordering_key, dedupe_key)])


async def emit_many(session: AsyncSession,
                    events: Iterable[tuple[str, str | None, Mapping[str, Any], str, str | None]]) -> None:
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


async def orders_created(session: AsyncSession, card_id: str, rows: list[dict[str, Any]]) -> None:
    """``order.created`` for each order row the persister writes (keyed by order id, so a
    replayed batch adds no second event)."""
    if not rows:
        return
    shop = await _shop_of_card(session, card_id)
    await emit_many(session, [
        ("order.created", shop, {"order_id": r["id"], "card_id": card_id, "room_id": r["room_id"],
                                 "user_id": r["user_id"], "qty": r["qty"], "amount_cents": r["amount_cents"],
                                 "status": r["status"], "created_at": iso(r["created_at"])},
         r["id"], f"order.created:{r['id']}")
        for r in rows])


async def card_sold_out(session: AsyncSession, card: Card) -> None:
    """``card.sold_out`` once per card and stock level (a restocked card may sell out again)."""
    shop = await _shop_of_card(session, card.id)
    await emit(session, "card.sold_out", shop,
               {"card_id": card.id, "room_id": card.room_id, "title": card.title,
                "stock": card.stock + card.restocked},
               card.id, dedupe_key=f"card.sold_out:{card.id}:{card.stock + card.restocked}")


async def room_status(session: AsyncSession, room: Room, status: str, at: datetime) -> None:
    """``room.live`` / ``room.ended``: ``room`` moved to ``status`` at ``at``, in the caller's
    transaction (the row itself may not show the change yet: it was made by an UPDATE)."""
    type_ = "room.live" if status == "live" else "room.ended"
    started = at if status == "live" else room.started_at
    await emit(session, type_, room.streamer_id,
               {"room_id": room.id, "title": room.title, "status": status,
                "started_at": iso(started), "ended_at": iso(at) if status == "ended" else None},
               room.id, dedupe_key=f"{type_}:{room.id}")
