"""Chat: the ``chat:send`` path, room history, the chat log in SQL, and the content guard hooks.

A message is validated, checked against penalties (platform-wide, then room-scoped in one
Lua step with slow mode), rate limited, vetted by the private-trading guard, then appended
to the room's recent history (a Redis list) and to the chat stream, pushed to the room, and
acknowledged. The stream is drained into ``ChatMessage`` rows by a ``StreamConsumer``, so a
slow or absent database never slows chat down and never loses a message.

``install(svc)`` wires it all in (see ``docs/chat.md``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.community.guard import Guard, Verdict
from live.community.guard_model import NgramModel
from live.community.moderation import ModerationService
from live.community.presence import Presence
from live.community.rooms import RoomService
from live.core import keys
from live.core.auth import Principal
from live.core.errors import Blocked, Forbidden, Invalid
from live.core.ids import iso, new_id, utcnow
from live.core.metrics import Metrics
from live.core.models import ChatMessage, Violation
from live.core.push import Pusher
from live.core.ratelimit import RateLimiter
from live.core.settings import Settings
from live.core.streams import Entry, StreamConsumer

if TYPE_CHECKING:
    from live.app.services import Services

log = logging.getLogger(__name__)

SCRIPTS = ["chat_admit", "mod_extend_mute"]
# How long a message can be found by id in Redis: SQL has it within a second normally, and
# the key costs memory per message (1000 msg/s is ~1M keys for 15 minutes).
INDEX_TTL_S = 900
ENDED_ROOM_TTL_S = 3600  # the recent list of an ended room stays this long for late visitors
_STREAMER_CACHE = 10_000  # rooms whose streamer id we remember (it never changes)

# Direction overrides and marks can make a message render as something else than it says.
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"))
_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """The text as stored and shown: NFC, no control or bidi characters, one space between words."""
    text = unicodedata.normalize("NFC", text).translate(_BIDI)
    kept = [ch if ch.isspace() else "" if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text]
    return _SPACES.sub(" ", "".join(kept)).strip()


class ChatLog:
    """Where messages live: each room's recent list in Redis and the stream drained into SQL."""

    def __init__(self, redis: Any, db: async_sessionmaker[AsyncSession], *, history: int, dialect: str) -> None:
        self.redis = redis
        self._redis = redis
        self._db = db
        self._history = history
        self._dialect = dialect

    async def append(self, msg: dict[str, Any]) -> None:
        """Record an accepted message: recent history, lookup by id, and the SQL stream."""
        raw = orjson.dumps(msg).decode()
        # Not a transaction: the keys are in different slots, and each write is safe alone
        # (LTRIM after a concurrent LPUSH still leaves the newest N).
        pipe = self._redis.pipeline(transaction=False)
        if self._history > 0:
            pipe.lpush(keys.room_chat(msg["room_id"]), raw)
            pipe.ltrim(keys.room_chat(msg["room_id"]), 0, self._history - 1)
        pipe.set(keys.chat_message(msg["id"]), f"{msg['room_id']} {msg['user']['id']}", ex=INDEX_TTL_S)
        pipe.xadd(keys.CHAT_STREAM, {"t": "msg", "m": raw})
        await pipe.execute()

    async def recent(self, room_id: str) -> list[dict[str, Any]]:
        """The room's last messages, oldest first."""
        if self._history <= 0:
            return []
        raws = await self._redis.lrange(keys.room_chat(room_id), 0, self._history - 1)
        return [orjson.loads(r) for r in reversed(raws)]

    async def find(self, msg_id: str) -> tuple[str, str] | None:
        """``(room_id, user_id)`` of a message: Redis for recent ones, SQL for the rest."""
        meta = await self._redis.get(keys.chat_message(msg_id))
        if meta:
            room_id, _, user_id = meta.partition(" ")
            return room_id, user_id
        async with self._db() as s:
            row = (await s.execute(select(ChatMessage.room_id, ChatMessage.user_id)
                                   .where(ChatMessage.id == msg_id))).first()
        return (row[0], row[1]) if row else None

    async def remove(self, room_id: str, msg_id: str) -> None:
        """Drop a message from the room's history and have the persister mark it deleted."""
        raw = ""
        needle = f'"id":"{msg_id}"'
        for item in await self._redis.lrange(keys.room_chat(room_id), 0, -1):
            if needle in item and orjson.loads(item).get("id") == msg_id:
                raw = item
                # By value: harmless if it was trimmed meanwhile.
                await self._redis.lrem(keys.room_chat(room_id), 1, item)
                break
        # The full message travels with the deletion, so the row ends up deleted even if the
        # deletion is applied before the message itself (e.g. after a dead-lettered retry).
        await self.emit({"t": "del", "id": msg_id, "m": raw})

    async def emit(self, fields: dict[str, str]) -> None:
        await self._redis.xadd(keys.CHAT_STREAM, fields)

    async def room_ended(self, room_id: str) -> None:
        """``rooms.on_end`` hook: an ended room's recent list and slow mode fade out of Redis
        (SQL keeps the log); bans stay, a streamer may go live again in a new room."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.expire(keys.room_chat(room_id), ENDED_ROOM_TTL_S)
        pipe.delete(keys.room_slowmode(room_id))
        await pipe.execute()

    # --- the persister's side --------------------------------------------------------------------
    async def apply(self, stream: str, entries: list[Entry]) -> None:
        """Write a batch of chat events to SQL in one transaction, in stream order; idempotent."""
        async with self._db() as s, s.begin():
            batch: list[dict[str, Any]] = []
            for _, f in entries:
                kind = f.get("t")
                if kind == "msg":
                    batch.append(_message_row(orjson.loads(f["m"])))
                    continue
                await self._insert_messages(s, batch)
                batch = []
                if kind == "del":
                    await self._mark_deleted(s, f["id"], f.get("m", ""))
                elif kind == "vio":
                    await self._insert_violation(s, f)
                else:
                    raise ValueError(f"unknown chat event {kind!r}")
            await self._insert_messages(s, batch)

    def _insert(self, model: Any) -> Any:
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(model)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model)

    @property
    def _upserts(self) -> bool:
        return self._dialect in ("postgresql", "sqlite")

    async def _insert_messages(self, s: AsyncSession, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._upserts:
            await s.execute(self._insert(ChatMessage).values(rows).on_conflict_do_nothing(index_elements=["id"]))
            return
        have = set((await s.execute(select(ChatMessage.id).where(
            ChatMessage.id.in_([r["id"] for r in rows])))).scalars())
        s.add_all([ChatMessage(**r) for r in rows if r["id"] not in have])
        await s.flush()

    async def _mark_deleted(self, s: AsyncSession, msg_id: str, raw: str) -> None:
        if raw and self._upserts:
            row = {**_message_row(orjson.loads(raw)), "deleted": True}
            await s.execute(self._insert(ChatMessage).values(row)
                            .on_conflict_do_update(index_elements=["id"], set_={"deleted": True}))
            return
        res = await s.execute(update(ChatMessage).where(ChatMessage.id == msg_id).values(deleted=True))
        if not getattr(res, "rowcount", 1) and raw:
            s.add(ChatMessage(**{**_message_row(orjson.loads(raw)), "deleted": True}))
            await s.flush()

    async def _insert_violation(self, s: AsyncSession, f: dict[str, str]) -> None:
        row = {"id": f["id"], "user_id": f["user_id"], "room_id": f.get("room_id") or None, "kind": f["kind"],
               "reason": f["reason"], "text": f.get("text", ""), "penalty": f["penalty"],
               "detector": f.get("detector", ""), "fragment": f.get("fragment", ""),
               "created_at": datetime.fromisoformat(f["ts"])}
        if self._upserts:
            await s.execute(self._insert(Violation).values(row).on_conflict_do_nothing(index_elements=["id"]))
        elif await s.get(Violation, row["id"]) is None:
            s.add(Violation(**row))
            await s.flush()


def _message_row(m: dict[str, Any]) -> dict[str, Any]:
    return {"id": m["id"], "room_id": m["room_id"], "user_id": m["user"]["id"], "user_name": m["user"]["name"][:64],
            "user_role": m["user"]["role"], "text": m["text"], "ts": datetime.fromisoformat(m["ts"]),
            "deleted": False}


class ChatService:
    """The rules of chat; transport calls ``send`` and nothing else touches the message path."""

    def __init__(self, *, settings: Settings, log: ChatLog, moderation: ModerationService, guard: Guard,
                 presence: Presence, ratelimit: RateLimiter, rooms: RoomService, pusher: Pusher,
                 metrics: Metrics) -> None:
        self._settings = settings
        self.log = log
        self._mod = moderation
        self._guard = guard
        self._presence = presence
        self._ratelimit = ratelimit
        self._rooms = rooms
        self._pusher = pusher
        self._metrics = metrics
        self._streamers: dict[str, str] = {}
        # Called with (room_id, who, text) after a message is accepted (e.g. lucky-bag keywords).
        self.on_message: list[Callable[[str, Principal, str], Awaitable[None]]] = []
        self._redis = log.redis

    async def send(self, conn_id: str, who: Principal, room_id: str, text: str) -> dict[str, Any]:
        """Post ``text`` to a room the connection ``conn_id`` has joined; the accepted message.

        Refusals: ``INVALID`` (empty, too long, room not joined), ``FORBIDDEN`` (banned from
        the room or from chat), ``MUTED`` (with ``until``), ``RATE_LIMITED`` (token bucket, or
        slow mode with ``retry_after``), ``BLOCKED`` (the guard, with ``reason`` and the penalty).
        When the guard is unsure the message is held for a moderator: the ack carries it with
        ``"held": true`` and nobody else sees it until it is approved (``docs/guard.md``).
        """
        clean = normalise_text(text)
        if not clean:
            raise Invalid("text is empty")
        if len(clean) > self._settings.chat_max_len:
            raise Invalid(f"text is longer than {self._settings.chat_max_len} characters")
        if room_id not in self._presence.rooms_of(conn_id):
            # A banned user was kicked out of the room; tell them why rather than "join first".
            if await self._mod.is_banned(room_id, who.id):
                raise Forbidden("you are banned from this room")
            raise Invalid("join the room before chatting in it")
        await self._mod.check_can_chat(who.id)
        await self._ratelimit.take(who.id, "chat", self._settings.chat_rate_per_s, self._settings.chat_rate_burst)
        exempt = who.is_moderator or await self._streamer_of(room_id) == who.id
        await self._mod.admit(room_id, who.id, exempt_slowmode=exempt)
        verdict = await self._vet_chat(who, clean)
        finding = verdict.finding
        if verdict.action == "block" and finding is not None:
            penalty = await self._mod.violation(who.id, kind="chat", reason=finding.reason, detector=finding.kind,
                                                text=clean, room_id=room_id, fragment=finding.match)
            raise Blocked(reason=finding.reason, **penalty.extra())
        msg = {"id": new_id(), "room_id": room_id, "user": who.public(), "text": clean, "ts": iso(utcnow())}
        if verdict.action == "hold" and finding is not None:
            try:
                await self._mod.hold(msg, score=verdict.score, signals=[list(s) for s in verdict.signals])
            except Exception as e:  # no review queue (database away): refuse rather than show it
                log.warning("could not hold a message for review, refusing it: %s", e)
                raise Blocked(reason=finding.reason, detail="review_unavailable") from e
            return {**msg, "held": True}
        await self.log.append(msg)
        await self._pusher.to_room(room_id, "chat:message", msg)
        self._metrics.chat_messages.inc()
        for hook in self.on_message:
            try:
                await hook(room_id, who, clean)
            except Exception:
                log.exception("chat message hook failed")  # the message itself was accepted
        return msg

    async def _vet_chat(self, who: Principal, text: str) -> Verdict:
        """The guard's verdict on ``text`` read with the user's name and their last few messages
        (a short Redis window, bounded and expiring), so a number split over lines is seen."""
        n = self._settings.guard_window_messages
        if n <= 0:
            return self._guard.verdict_with(text, [who.name])
        key = keys.user_guard_window(who.id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(key, 0, n - 1)
        pipe.lpush(key, text)
        pipe.ltrim(key, 0, n - 1)
        pipe.expire(key, self._settings.guard_window_s)
        prior, *_ = await pipe.execute()
        return self._guard.verdict_with(text, [who.name, *reversed(prior)])

    async def _streamer_of(self, room_id: str) -> str:
        sid = self._streamers.get(room_id)
        if sid is None:
            sid = (await self._rooms.get(room_id)).streamer_id
            if len(self._streamers) >= _STREAMER_CACHE:
                self._streamers.clear()
            self._streamers[room_id] = sid
        return sid

    async def history(self, room_id: str) -> list[dict[str, Any]]:
        """``rooms.history`` hook: the recent messages for the ``room:join`` ack, oldest first."""
        return await self.log.recent(room_id)

    async def vet(self, who: Principal, text: str, *, kind: str, room_id: str | None = None) -> None:
        """Guard any user text (card titles, ...): ``BLOCKED`` plus a violation and its penalty."""
        finding = self._guard.check(text)
        if finding is not None:
            penalty = await self._mod.violation(who.id, kind=kind, reason=finding.reason, detector=finding.kind,
                                                text=text, room_id=room_id, fragment=finding.match)
            raise Blocked(reason=finding.reason, **penalty.extra())

    def vet_name(self, name: str) -> None:
        """``auth.name_guard`` hook: names are vetted before the user exists, so no penalty."""
        self._vet_anonymous(name, "username")

    def _vet_anonymous(self, text: str, kind: str) -> None:
        finding = self._guard.check(text)
        if finding is not None:
            self._mod.blocked_anonymous(kind, finding.reason)
            raise Blocked(reason=finding.reason)


def install(svc: Services) -> None:
    """Build the guard, chat and moderation services, hook them into rooms and auth, and add
    the chat-log persister loop."""
    s = svc.settings
    guard = Guard(banned_words=s.banned_words, model=NgramModel.load() if s.guard_model else None)
    chat_log = ChatLog(svc.redis, svc.db, history=s.chat_history, dialect=svc.engine.dialect.name)
    moderation = ModerationService(redis=svc.redis, scripts=svc.scripts, db=svc.db, pusher=svc.pusher,
                                   auth=svc.auth, rooms=svc.rooms, ratelimit=svc.ratelimit, metrics=svc.metrics,
                                   penalties=s.penalties, log=chat_log, hold_expiry_s=s.guard_hold_expiry_s,
                                   hold_sweep_s=s.guard_hold_sweep_s)
    chat = ChatService(settings=s, log=chat_log, moderation=moderation, guard=guard, presence=svc.presence,
                       ratelimit=svc.ratelimit, rooms=svc.rooms, pusher=svc.pusher, metrics=svc.metrics)
    svc.guard, svc.chat, svc.moderation = guard, chat, moderation
    svc.rooms.join_checks.append(moderation.join_check)
    svc.rooms.history = chat.history
    svc.rooms.on_end.append(chat_log.room_ended)
    async def vet_title(title: str, who: Principal) -> None:
        await chat.vet(who, title, kind="title")

    svc.rooms.title_guard = vet_title
    svc.auth.name_guard = chat.vet_name

    async def streams() -> list[str]:
        return [keys.CHAT_STREAM]

    consumer = StreamConsumer(
        svc.redis, group=keys.PERSIST_GROUP, consumer=svc.proc_id, apply=chat_log.apply, streams=streams,
        dead_key=lambda _: keys.CHAT_DEAD, on_dead=lambda _: svc.metrics.dead_letters.labels("chat").inc(),
        batch=s.persister_batch, claim_idle_ms=s.persister_claim_idle_ms, max_deliveries=s.persister_max_deliveries,
        gather_s=s.persister_gather_ms / 1000)
    svc.add_loop("chat-persister", consumer.run, "background")
    # A conditional UPDATE ... WHERE status = 'held' RETURNING: one expiry, one push, any number of copies.
    svc.add_loop("guard-hold-expiry", moderation.expiry_loop, "background")
    svc.closers.append(moderation.close)
