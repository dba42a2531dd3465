"""Go-live notifications: ``notify:live`` to every connected follower, on every process, and
a bounded notification list for the rest.

Going live writes one ``fan_events`` row and publishes one bus message. Every process then
looks only at its own connected users (it knows them exactly, no shared online set to keep
right), asks SQL which of them follow the streamer (or asked to be reminded of the room) in
chunks of 500, and writes one pre-encoded frame to those users' connections through the
Socket.IO manager's local path, in batches. With 10,000 followers online on a process, that is
20 indexed queries and 10 emits; the 90,000 who are away cost nothing until they open
``GET /api/me/notifications``, which joins their follows to the events (one row per go-live,
a read cursor per user, never one row per follower).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import orjson
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.core import keys
from live.core.auth import Principal
from live.core.errors import Conflict, Invalid, NotFound
from live.core.ids import iso, new_id, utcnow
from live.core.models import FanEvent, Follow, NotifyCursor, Room, RoomReminder, User
from live.fans.follows import FollowService, among, chunks, upsert

log = logging.getLogger(__name__)
BATCH = 1000  # users per emit: one encoding, one pass over their connections


class LocalDelivery(Protocol):
    """This process's connections, provided by the transport (Socket.IO)."""

    def local_users(self) -> set[str]:
        """Ids of the users with at least one connection on this process."""

    async def deliver(self, user_ids: list[str], event: str, data: Any) -> None:
        """Send ``event`` to this process's connections of ``user_ids`` (not through Redis)."""


class NotifyService:
    def __init__(self, db: async_sessionmaker[AsyncSession], bus: Any, follows: FollowService, dialect: str,
                 keep: int) -> None:
        self._db = db
        self._bus = bus
        self._follows = follows
        self._dialect = dialect
        self._keep = keep
        self.delivery: LocalDelivery | None = None  # set by the transport at start
        self._tasks: set[asyncio.Task[Any]] = set()
        self.delivered = 0  # users notified by this process (for the bench and metrics)

    # --- going live --------------------------------------------------------------------------
    async def room_live(self, room: Room) -> None:
        """``rooms.on_live`` hook: record the event and tell every process."""
        async with self._db() as s, s.begin():
            streamer = await s.get(User, room.streamer_id)
            name = streamer.name if streamer else ""
            event = FanEvent(id=new_id(), kind="live", streamer_id=room.streamer_id, room_id=room.id,
                             title=room.title, streamer_name=name, created_at=utcnow())
            s.add(event)
        await self._bus.publish(keys.CH_FANS_LIVE, orjson.dumps(self._view(event)).decode())

    async def on_bus(self, message: str) -> None:
        """Every process: notify its own connected followers (in a task: the bus keeps flowing)."""
        task = asyncio.create_task(self.fan_out(orjson.loads(message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fan_out(self, event: dict[str, Any]) -> int:
        """Deliver ``notify:live`` to this process's users who follow the streamer or asked to
        be reminded of the room. Returns how many users were notified."""
        delivery = self.delivery
        if delivery is None:
            return 0
        try:
            online = delivery.local_users()
            online.discard(event["streamer"]["id"])
            if not online:
                return 0
            t0 = time.perf_counter()
            targets = await self._follows.followers_among(event["streamer"]["id"], online)
            targets |= await self._reminded_among(event["room_id"], online - targets)
            t1 = time.perf_counter()
            payload = {k: event[k] for k in ("id", "room_id", "title", "streamer", "at")}
            ordered = sorted(targets)
            for part in chunks(ordered, BATCH):
                await delivery.deliver(part, "notify:live", payload)
            t2 = time.perf_counter()
            self.delivered += len(ordered)
            log.info("go-live fan-out of room %s: %d of %d local users notified (sql %.0f ms, emit %.0f ms)",
                     event["room_id"], len(ordered), len(online), (t1 - t0) * 1000, (t2 - t1) * 1000)
            return len(ordered)
        except Exception:
            log.exception("go-live fan-out failed")
            return 0

    async def _reminded_among(self, room_id: str, user_ids: Iterable[str]) -> set[str]:
        return await among(self._db, RoomReminder.user_id, RoomReminder.room_id == room_id, user_ids)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- reminders ----------------------------------------------------------------------------
    async def remind(self, who: Principal, room_id: str, on: bool = True) -> dict[str, Any]:
        """Be told when a scheduled room goes live, without following its streamer."""
        async with self._db() as s, s.begin():
            room = await s.get(Room, room_id)
            if room is None:
                raise NotFound("no such room")
            if on:
                if room.status != "scheduled":
                    raise Conflict(f"the room is {room.status}, not scheduled")
                await s.execute(upsert(self._dialect, RoomReminder).values(
                    room_id=room_id, user_id=who.id, created_at=utcnow()).on_conflict_do_nothing())
            else:
                await s.execute(delete(RoomReminder).where(RoomReminder.room_id == room_id,
                                                           RoomReminder.user_id == who.id))
        return {"room_id": room_id, "reminded": on}

    # --- the list -------------------------------------------------------------------------------
    async def list(self, who: Principal) -> dict[str, Any]:
        """The newest ``keep`` notifications of ``who`` (go-lives of accounts followed since
        before the event, and of rooms they asked to be reminded of), with read marks."""
        async with self._db() as s:
            followed = list((await s.execute(
                select(FanEvent).join(Follow, (Follow.followee_id == FanEvent.streamer_id)
                                      & (Follow.follower_id == who.id))
                .where(FanEvent.created_at >= Follow.created_at)
                .order_by(FanEvent.id.desc()).limit(self._keep))).scalars())
            reminded = list((await s.execute(
                select(FanEvent).join(RoomReminder, (RoomReminder.room_id == FanEvent.room_id)
                                      & (RoomReminder.user_id == who.id))
                .order_by(FanEvent.id.desc()).limit(self._keep))).scalars())
            cursor = await s.get(NotifyCursor, who.id)
        read_upto = cursor.read_upto if cursor else ""
        events = sorted({e.id: e for e in followed + reminded}.values(), key=lambda e: e.id, reverse=True)
        items = [{**self._view(e), "read": e.id <= read_upto} for e in events[:self._keep]]
        return {"items": items, "unread": sum(1 for i in items if not i["read"])}

    async def mark_read(self, who: Principal, upto: str | None) -> dict[str, Any]:
        """Mark read everything up to ``upto`` (default: all); the cursor only moves forward."""
        if upto is None:
            upto = new_id()  # every existing id sorts before a new one
        elif len(upto) > 32:
            raise Invalid("upto: a notification id")
        async with self._db() as s, s.begin():
            stmt = upsert(self._dialect, NotifyCursor).values(user_id=who.id, read_upto=upto)
            await s.execute(stmt.on_conflict_do_update(
                index_elements=["user_id"], set_={"read_upto": upto},
                where=NotifyCursor.read_upto < upto))
        return await self.list(who)

    @staticmethod
    def _view(e: FanEvent) -> dict[str, Any]:
        return {"id": e.id, "kind": e.kind, "room_id": e.room_id, "title": e.title,
                "streamer": {"id": e.streamer_id, "name": e.streamer_name}, "at": iso(e.created_at)}
