"""Rooms: a streamer's live show. Create, go live, end, list, snapshot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.community.presence import Presence
from live.core import keys
from live.core.auth import Principal
from live.core.errors import Conflict, Forbidden, NotFound
from live.core.ids import iso, new_id, utcnow
from live.core.models import Room, User
from live.core.push import Pusher


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
        # Checks before a user joins (e.g. chat bans); each raises a LiveError to refuse.
        self.join_checks: list[Callable[[str, Principal], Awaitable[None]]] = []
        # Recent chat for the join ack, set by the chat module.
        self.history: Callable[[str], Awaitable[list[dict[str, Any]]]] | None = None
        # The shop's standing check (governance): raises FORBIDDEN with the restriction.
        self.standing: Callable[[str, str], Awaitable[None]] | None = None

    async def join(self, room_id: str, who: Principal) -> dict[str, Any]:
        """What a joining viewer receives: the snapshot and the recent chat."""
        for check in self.join_checks:
            await check(room_id, who)
        snap = await self.snapshot(room_id)
        chat = await self.history(room_id) if self.history else []
        return {"room": snap, "chat": chat}

    async def create(self, who: Principal, title: str) -> dict[str, Any]:
        if who.role != "streamer":
            raise Forbidden("only streamers create rooms")
        if self.title_guard:
            await self.title_guard(title, who)
        room = Room(id=new_id(), title=title, streamer_id=who.id, status="scheduled", pinned_card_id=None,
                    created_at=utcnow())
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
        async with self._db() as s, s.begin():
            room = await s.get(Room, room_id, with_for_update=True)
            if room is None:
                raise NotFound("no such room")
            if room.streamer_id != who.id:
                raise Forbidden("not your room")
            if room.status == "ended":
                raise Conflict("room has ended")
            if room.status != status:
                room.status = status
                if status == "live":
                    room.started_at = utcnow()
                else:
                    room.ended_at = utcnow()
        await self.touch(room_id)
        await self._pusher.to_room(room_id, "room:status", {"room_id": room_id, "status": status})
        if status == "ended":
            for hook in self.on_end:
                await hook(room_id)
        return await self.snapshot(room_id)

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
        return {
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
