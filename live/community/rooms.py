"""Rooms: a streamer's live show. Create, go live, end, list, snapshot; and the loop that
ends rooms nobody hosts any more.

A live room is *hosted* while its publisher (a WHIP session) or its streamer's studio socket is
connected to some process. Each process writes, every tick, "seen now" for the rooms it hosts
into the room's hosts ZSET (``keys.room_hosts``); going live writes a ``live`` entry, which
covers the gap until the first host is seen and is then dropped. Any
process ends a live room whose newest entry is older than ``room_idle_end_s``; the ending is one
conditional SQL update (``status = 'live'`` → ``ended``), so however many processes race, one
wins and pushes ``room:status`` once. Entries of processes that are no longer registered
(``keys.PROCS``: a clean stop deregisters at once, a killed process is reaped) do not count, so
a restart with nobody publishing ends the rooms at once instead of a grace period later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.community.presence import Presence
from live.core import keys
from live.core.auth import Principal
from live.core.errors import Conflict, Forbidden, NotFound, log_loop_error
from live.core.ids import iso, new_id, now_ms, utcnow
from live.core.models import Room, User
from live.core.push import Pusher
from live.integrations import outbox

if TYPE_CHECKING:
    from live.app.services import Services

log = logging.getLogger(__name__)

HOST_LIVE = "live"  # the hosts entry written when a room goes live (before anyone hosts it)


class CardsProvider(Protocol):
    async def room_cards(self, room_id: str, version: str | None = None) -> list[dict[str, Any]]: ...


class RoomService:
    def __init__(self, db: async_sessionmaker[AsyncSession], pusher: Pusher, presence: Presence,
                 redis: Any) -> None:
        self._db = db
        self._pusher = pusher
        self._presence = presence
        self._redis = redis
        # room id -> (version, room row, streamer row): a join storm reads SQL once per change.
        self._cache: dict[str, tuple[str, Room, User]] = {}
        self.cards: CardsProvider | None = None  # the flash-buy service, set by the app
        # Trust & safety on titles, set by the chat module: raises Blocked (and records a violation).
        self.title_guard: Callable[[str, Principal], Awaitable[None]] | None = None
        self.on_end: list[Callable[[str], Awaitable[None]]] = []  # e.g. media stops publishing
        # Called once when a room goes live (e.g. the fans domain notifies followers).
        self.on_live: list[Callable[[Room], Awaitable[None]]] = []
        # Extra fields of a snapshot (e.g. the fans domain's follower count).
        self.extras: list[Callable[[Room, User], Awaitable[dict[str, Any]]]] = []
        # Checks before a user joins (e.g. chat bans); each raises a LiveError to refuse.
        self.join_checks: list[Callable[[str, Principal], Awaitable[None]]] = []
        # Recent chat for the join ack, set by the chat module.
        self.history: Callable[[str], Awaitable[list[dict[str, Any]]]] | None = None
        # Rooms this process hosts (each provider returns room ids): the streamer's studio
        # sockets, from presence; media adds its WHIP publishers.
        self.hosting: list[Callable[[], Iterable[str]]] = [presence.hosted_rooms]
        self.idle_end_s = 180.0  # set from settings by ``install``
        self._hosted: set[str] = set()  # rooms this process hosted at the last tick
        # The shop's standing check (governance): raises FORBIDDEN with the restriction.
        self.standing: Callable[[str, str], Awaitable[None]] | None = None

    async def join(self, room_id: str, who: Principal) -> dict[str, Any]:
        """What a joining viewer receives: the snapshot and the recent chat."""
        for check in self.join_checks:
            await check(room_id, who)
        snap = await self.snapshot(room_id)
        chat = await self.history(room_id) if self.history else []
        return {"room": snap, "chat": chat}

    async def create(self, who: Principal, title: str, scheduled_at: datetime | None = None) -> dict[str, Any]:
        if who.role != "streamer":
            raise Forbidden("only streamers create rooms")
        if self.title_guard:
            await self.title_guard(title, who)
        room = Room(id=new_id(), title=title, streamer_id=who.id, status="scheduled", pinned_card_id=None,
                    created_at=utcnow(), scheduled_at=scheduled_at)
        async with self._db() as s, s.begin():
            s.add(room)
        return await self.snapshot(room.id)

    async def get(self, room_id: str) -> Room:
        async with self._db() as s:
            room = await s.get(Room, room_id)
        if room is None:
            raise NotFound("no such room")
        return room

    async def require_owner(self, who: Principal, room_id: str) -> Room:
        """The room, if ``who`` is its streamer; moderators pass too."""
        room = await self.get(room_id)
        if room.streamer_id != who.id and not who.is_moderator:
            raise Forbidden("not your room")
        return room

    async def _set_status(self, who: Principal, room_id: str, status: str) -> dict[str, Any]:
        if status == "live":
            # Before the row says live, so that no idle sweep sees a live room nobody hosts.
            await self._mark(room_id, HOST_LIVE)
        async with self._db() as s, s.begin():
            room = await s.get(Room, room_id, with_for_update=True)
            if room is None:
                raise NotFound("no such room")
            if room.streamer_id != who.id:
                raise Forbidden("not your room")
            if room.status == "ended":
                raise Conflict("room has ended")
            changed = room.status != status
            if changed:
                # Conditional on the status read, so that a race with the idle loop (or another
                # request) changes the row once: the loser gets CONFLICT and pushes nothing.
                stamp = {"started_at": utcnow()} if status == "live" else {"ended_at": utcnow()}
                res = await s.execute(update(Room).where(Room.id == room_id, Room.status == room.status)
                                      .values(status=status, **stamp))
                if getattr(res, "rowcount", 0) != 1:
                    raise Conflict("the room's status changed meanwhile")
                await outbox.room_status(s, room, status, next(iter(stamp.values())))  # webhooks: iff it commits
        if status == "ended":
            await self._redis.delete(keys.room_hosts(room_id))
        await self.touch(room_id)
        await self._pusher.to_room(room_id, "room:status", {"room_id": room_id, "status": status})
        if status == "ended":
            for hook in self.on_end:
                await hook(room_id)
        if status == "live" and changed:
            for live_hook in self.on_live:
                try:
                    await live_hook(room)
                except Exception:
                    log.exception("go-live hook failed")  # the room is live all the same
        return await self.snapshot(room_id)

    async def _finish(self, room_id: str) -> bool:
        """End a live room nobody hosts: True for the one caller whose update changed the row."""
        async with self._db() as s, s.begin():
            now = utcnow()
            res = await s.execute(update(Room).where(Room.id == room_id, Room.status == "live")
                                  .values(status="ended", ended_at=now))
            room = await s.get(Room, room_id) if getattr(res, "rowcount", 0) == 1 else None
            if room is not None:
                await outbox.room_status(s, room, "ended", now)  # webhooks: iff it commits
        if room is None:
            return False
        log.info("room %s ended by itself: no publisher or streamer for %.0f s", room_id, self.idle_end_s)
        await self.touch(room_id)
        await self._pusher.to_room(room_id, "room:status", {"room_id": room_id, "status": "ended"})
        await self._redis.delete(keys.room_hosts(room_id))
        for hook in self.on_end:
            await hook(room_id)
        return True

    async def _mark(self, room_id: str, host: str) -> None:
        key = keys.room_hosts(room_id)
        await self._redis.zadd(key, {host: now_ms()})
        # A room that ends deletes its key; this only collects keys of rooms lost some other way.
        await self._redis.expire(key, int(max(3600, 4 * self.idle_end_s)))

    async def mark_hosts(self) -> None:
        """Write "seen now" for every room this process hosts."""
        rooms: set[str] = set()
        for provider in self.hosting:
            rooms.update(provider())
        for room_id in rooms:
            await self._mark(room_id, self._presence.proc_id)
            if room_id not in self._hosted:
                # Hosted now: the go-live entry has served (it only covers the gap before the
                # first host), so once the last host is gone the room counts as unhosted.
                await self._redis.zrem(keys.room_hosts(room_id), HOST_LIVE)
        self._hosted = rooms

    async def end_idle(self) -> list[str]:
        """End every live room whose newest hosts entry is older than ``idle_end_s``. Entries of
        processes that are no longer registered (stopped, or reaped after ``kill -9``) do not
        count: what a dead process hosted is gone, so a restart ends its rooms without waiting."""
        async with self._db() as s:
            live = list((await s.execute(select(Room.id).where(Room.status == "live"))).scalars())
        if not live:
            return []
        alive = {str(p) for p in await self._redis.zrange(keys.PROCS, 0, -1)} | {HOST_LIVE}
        cutoff = now_ms() - int(self.idle_end_s * 1000)
        ended = []
        for room_id in live:
            hosts = await self._redis.zrange(keys.room_hosts(room_id), 0, -1, withscores=True)
            if any(str(host) in alive and float(seen) >= cutoff for host, seen in hosts):
                continue
            if await self._finish(room_id):
                ended.append(room_id)
        return ended

    async def run_idle(self, stop: asyncio.Event, *, mark: bool = True, end: bool = True) -> None:
        """The loop: mark the rooms hosted here (``mark``: a serving process), end the ones nobody
        hosts (``end``: background work); until ``stop``. Its first pass runs at start-up, which
        ends what a previous run left live."""
        interval = max(0.2, min(5.0, self.idle_end_s / 4))
        while not stop.is_set():
            try:
                if mark:
                    await self.mark_hosts()
                if end:
                    await self.end_idle()
            except Exception as e:
                log_loop_error(log, "room idle loop error", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def mine(self, who: Principal, status: str | None = None) -> list[dict[str, Any]]:
        """The rooms of streamer ``who`` (newest first), e.g. its live one to resume."""
        q = select(Room, User).join(User, User.id == Room.streamer_id).where(Room.streamer_id == who.id)
        if status is not None:
            q = q.where(Room.status == status)
        async with self._db() as s:
            rows = (await s.execute(q.order_by(Room.created_at.desc()).limit(50))).all()
        return [await self._render(room, user, with_cards=False) for room, user in rows]

    async def go_live(self, who: Principal, room_id: str) -> dict[str, Any]:
        if self.standing is not None:
            await self.standing(who.id, "live")
        return await self._set_status(who, room_id, "live")

    async def end(self, who: Principal, room_id: str) -> dict[str, Any]:
        return await self._set_status(who, room_id, "ended")

    async def set_pinned(self, room_id: str, card_id: str | None) -> None:
        async with self._db() as s, s.begin():
            room = await s.get(Room, room_id)
            if room is None:
                raise NotFound("no such room")
            room.pinned_card_id = card_id
        await self.touch(room_id)

    async def touch(self, room_id: str) -> None:
        """The room's snapshot changed shape: every process re-reads it from SQL next time."""
        await self._redis.incr(keys.room_version(room_id))

    async def version(self, room_id: str) -> str:
        return str(await self._redis.get(keys.room_version(room_id)) or "0")

    async def list_live(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self._db() as s:
            rows = (await s.execute(
                select(Room, User).join(User, User.id == Room.streamer_id)
                .where(Room.status == "live").order_by(Room.started_at.desc()).limit(limit))).all()
        return [await self._render(room, user, with_cards=False) for room, user in rows]

    async def snapshot(self, room_id: str) -> dict[str, Any]:
        """The contract's room snapshot, with live viewer count and cards."""
        version = await self.version(room_id)
        cached = self._cache.get(room_id)
        if cached is not None and cached[0] == version:
            room, streamer = cached[1], cached[2]
        else:
            async with self._db() as s:
                row = (await s.execute(
                    select(Room, User).join(User, User.id == Room.streamer_id).where(Room.id == room_id))).first()
            if row is None:
                raise NotFound("no such room")
            room, streamer = row[0], row[1]
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[room_id] = (version, room, streamer)
        return await self._render(room, streamer, with_cards=True, version=version)

    async def _render(self, room: Room, streamer: User, *, with_cards: bool,
                      version: str | None = None) -> dict[str, Any]:
        cards: list[dict[str, Any]] = []
        if with_cards and self.cards is not None:
            cards = await self.cards.room_cards(room.id, version)
        view = {
            "id": room.id,
            "title": room.title,
            "streamer": {"id": streamer.id, "name": streamer.name},
            "status": room.status,
            "viewers": await self._presence.count(room.id),
            "cards": cards,
            "pinned_card_id": room.pinned_card_id,
            "created_at": iso(room.created_at),
            "started_at": iso(room.started_at),
        }
        for extra in self.extras:
            view.update(await extra(room, streamer))
        return view


def install(svc: Services) -> None:
    """Rooms end by themselves: the idle loop (a clean stop deregisters the process in
    presence, which is all a restart needs to see that nobody hosts its rooms any more)."""
    svc.rooms.idle_end_s = svc.settings.room_idle_end_s
    rooms = svc.rooms
    svc.add_loop("rooms-hosts", lambda stop: rooms.run_idle(stop, end=False), "serving")  # this process's hosts
    svc.add_loop("rooms-idle", lambda stop: rooms.run_idle(stop, mark=False), "background")
