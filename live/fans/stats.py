"""Shop stats: followers, buyers, repeat buyers (bought in two shows or more), orders and GMV,
per show (room) and overall. Counted orders are those the buyer paid for and kept
(``paid``, ``shipped``, ``completed``); lucky-bag prizes are not sales."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.commerce.views import money
from live.core.auth import Principal
from live.core.errors import Forbidden
from live.core.ids import iso
from live.core.models import Card, Order, Room
from live.fans.follows import FollowService

SOLD = ("paid", "shipped", "completed")


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


async def shop_stats(db: async_sessionmaker[AsyncSession], follows: FollowService, who: Principal) -> dict[str, Any]:
    if who.role != "streamer":
        raise Forbidden("only streamers have a shop")
    async with db() as s:
        rooms = list((await s.execute(select(Room).where(Room.streamer_id == who.id)
                                      .order_by(Room.created_at))).scalars())
        rows = (await s.execute(
            select(Card.room_id, Order.user_id, func.count(), func.sum(Order.amount_cents))
            .join(Card, Card.id == Order.card_id).join(Room, Room.id == Card.room_id)
            .where(Room.streamer_id == who.id, Order.status.in_(SOLD), Card.audience != "lucky_bag")
            .group_by(Card.room_id, Order.user_id))).all()
    per_room: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    shows_of: dict[str, int] = defaultdict(int)
    for room_id, user_id, n, cents in rows:
        per_room[room_id][user_id] = (int(n), int(cents or 0))
        shows_of[user_id] += 1
    seen: set[str] = set()
    shows = []
    for room in rooms:  # oldest first: a buyer "returns" when an earlier show already sold to them
        buyers = per_room.get(room.id, {})
        returning = sum(1 for u in buyers if u in seen)
        seen.update(buyers)
        orders = sum(n for n, _ in buyers.values())
        shows.append({"room_id": room.id, "title": room.title, "status": room.status,
                      "started_at": iso(room.started_at), "buyers": len(buyers), "returning_buyers": returning,
                      "repeat_rate": rate(returning, len(buyers)), "orders": orders,
                      "gmv": money(sum(c for _, c in buyers.values()))})
    buyers_all = len(shows_of)
    repeat = sum(1 for n in shows_of.values() if n >= 2)
    return {"followers": await follows.count(who.id), "buyers": buyers_all, "repeat_buyers": repeat,
            "repeat_rate": rate(repeat, buyers_all), "orders": sum(s["orders"] for s in shows),
            "gmv": money(sum(int(c or 0) for *_, c in rows)), "shows": list(reversed(shows))}
