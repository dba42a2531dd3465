"""Moderation and governance: bans, mutes, slow mode, deletions, reports, violations with
escalating penalties, the audit log and its statistics.

Everything that must hold on every process (room bans, mutes, slow mode, penalties) is state
in Redis, never process memory, so a penalty applied through one process refuses the user on
all of them. The record (violations, reports, moderation actions) is kept in SQL.

Who may act: the room's streamer or a moderator for room-scoped actions; moderators only for
the report queue, the audit log and the statistics. Moderator rights come from the token role
(``LIVE_ADMIN_TOKEN`` or a moderator's token) or from a promotion recorded in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.community.rooms import RoomService
from live.core import keys
from live.core.auth import AuthService, Principal
from live.core.errors import Conflict, Forbidden, Invalid, Muted, NotFound, RateLimited, log_loop_error
from live.core.ids import iso, iso_ms, new_id, now_ms, utcnow
from live.core.metrics import Metrics
from live.core.models import Card, ChatMessage, HeldMessage, ModerationAction, Report, Room, User, Violation
from live.core.push import Pusher
from live.core.ratelimit import RateLimiter

log = logging.getLogger(__name__)

ReportTarget = Literal["message", "room", "card", "user"]
ReportAction = Literal["dismiss", "delete", "mute", "ban"]
HeldDecision = Literal["approve", "reject"]
HeldStatus = Literal["held", "approved", "rejected", "expired", "all"]
EXPIRE_BATCH = 500  # held messages expired per statement
DEFAULT_MUTE_S = 600  # a report resolved with "mute" and no duration
MAX_MUTE_S = 30 * 86400
REPORT_RATE_PER_S = 0.2  # reports are cheap to send and costly to review
REPORT_BURST = 10


class MessageLog(Protocol):
    """What moderation needs of the chat log (implemented by ``live.community.chat.ChatLog``)."""

    async def find(self, msg_id: str) -> tuple[str, str] | None:
        """``(room_id, user_id)`` of a message, or None when there is no such message."""

    async def remove(self, room_id: str, msg_id: str) -> None:
        """Drop a message from the room's recent history and mark it deleted in SQL."""

    async def emit(self, fields: dict[str, str]) -> None:
        """Append an event (e.g. a violation) to the stream the SQL persister drains."""

    async def append(self, msg: dict[str, Any]) -> None:
        """Record an accepted message (room history, lookup by id, the SQL stream)."""


@dataclass(frozen=True, slots=True)
class Penalty:
    """What a violation earned: ``warn``, ``mute:N``, ``chat_ban`` or ``listing_ban``."""

    name: str
    violations: int  # how many violations the user has now, this one included
    until_ms: int | None = None  # end of the mute in force, for mutes

    def extra(self) -> dict[str, Any]:
        """Fields added to the ``BLOCKED`` error so a client can say what happened."""
        out: dict[str, Any] = {"penalty": self.name, "violations": self.violations}
        if self.until_ms is not None:
            out["until"] = iso_ms(self.until_ms)
        return out


def penalty_for(penalties: list[str], n: int) -> str:
    """The penalty of the ``n``-th violation (1-based): the n-th entry, the last one repeating."""
    if not penalties:
        return "warn"
    return penalties[min(n, len(penalties)) - 1]


class ModerationService:
    def __init__(self, *, redis: Any, scripts: Any, db: async_sessionmaker[AsyncSession], pusher: Pusher,
                 auth: AuthService, rooms: RoomService, ratelimit: RateLimiter, metrics: Metrics,
                 penalties: list[str], log: MessageLog, hold_expiry_s: float = 4 * 3600.0,
                 hold_sweep_s: float = 30.0) -> None:
        self._redis = redis
        self._scripts = scripts
        self._db = db
        self._pusher = pusher
        self._auth = auth
        self._rooms = rooms
        self._ratelimit = ratelimit
        self._metrics = metrics
        self._penalties = list(penalties)
        self._log = log
        self._hold_expiry_s = hold_expiry_s
        self._hold_sweep_s = hold_sweep_s
        # Fire-and-forget bookkeeping from synchronous hooks (title/name guards), kept so
        # that shutdown can wait for it instead of leaving orphan tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    # --- permissions ----------------------------------------------------------------------
    async def require_room_mod(self, who: Principal, room_id: str) -> Room:
        """The room, if ``who`` is its streamer or a moderator (by token or by promotion)."""
        try:
            return await self._rooms.require_owner(who, room_id)
        except Forbidden:
            if await self._auth.is_moderator(who):
                return await self._rooms.get(room_id)
            raise

    async def require_moderator(self, who: Principal) -> None:
        """Moderators only (the admin credential or a user promoted in the database)."""
        await self._auth.require_moderator(who)

    async def _target_user(self, room: Room | None, user_id: str) -> User:
        """The user a room-scoped action is aimed at; never the room's streamer or a moderator."""
        user = await self._auth.get_user(user_id)
        if user is None:
            raise NotFound("no such user")
        if room is not None and user.id == room.streamer_id:
            raise Forbidden("the room's streamer cannot be muted or banned in the room")
        if user.role == "moderator":
            raise Forbidden("moderators cannot be muted or banned")
        return user

    # --- state read on the hot paths --------------------------------------------------------
    async def is_banned(self, room_id: str, user_id: str) -> bool:
        return bool(await self._redis.sismember(keys.room_banned(room_id), user_id))

    async def join_check(self, room_id: str, who: Principal) -> None:
        """``rooms.join_checks`` hook: a user banned from the room cannot (re-)join it."""
        if await self.is_banned(room_id, who.id):
            raise Forbidden("you are banned from this room")

    async def check_can_chat(self, user_id: str) -> None:
        """Platform-wide penalties: a chat ban is ``FORBIDDEN``, a mute is ``MUTED`` with ``until``."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(keys.user_chat_ban(user_id))
        pipe.get(keys.user_muted(user_id))
        banned, muted = await pipe.execute()
        if banned:
            raise Forbidden("you are banned from chat")
        if muted:
            raise Muted("you are muted", until=iso_ms(int(muted)))

    async def check_can_list(self, user_id: str) -> None:
        """For product listings: a ``listing_ban`` penalty refuses them (``FORBIDDEN``)."""
        if await self._redis.exists(keys.user_listing_ban(user_id)):
            raise Forbidden("you are banned from listing products")

    async def admit(self, room_id: str, user_id: str, *, exempt_slowmode: bool) -> None:
        """Room-scoped checks of one message, atomically (ban, mute, slow-mode slot)."""
        res = await self._scripts.chat_admit(
            keys=[keys.room_banned(room_id), keys.room_muted(room_id, user_id), keys.room_slowmode(room_id),
                  keys.room_last_msg(room_id, user_id)],
            args=[user_id, "1" if exempt_slowmode else "0"])
        code = int(res[0])
        if code == 1:
            raise Forbidden("you are banned from this room")
        if code == 2:
            raise Muted("you are muted in this room", until=iso_ms(int(res[1])))
        if code == 3:
            retry = max(1, int(res[1])) / 1000
            raise RateLimited(f"slow mode: wait {retry:.1f}s", retry_after=retry)

    # --- violations and penalties -----------------------------------------------------------
    async def violation(self, user_id: str, *, kind: str, reason: str, detector: str, text: str,
                        room_id: str | None = None, fragment: str = "") -> Penalty:
        """Record a violation and apply the next penalty of the escalation ladder.

        The count lives in Redis (INCR is atomic across processes, so two violations at once
        earn two steps); the SQL row goes through the chat stream and lands even if the
        database is briefly away.
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(keys.user_violations(user_id))
        pipe.hincrby(keys.MOD_BLOCKED, reason, 1)
        n, _ = await pipe.execute()
        name = penalty_for(self._penalties, int(n))
        until = await self._apply_penalty(user_id, name)
        await self._log.emit({
            "t": "vio", "id": new_id(), "user_id": user_id, "room_id": room_id or "", "kind": kind[:16],
            "reason": reason[:32], "detector": detector[:32], "fragment": fragment[:200], "text": text[:2000],
            "penalty": name,
            "ts": iso(utcnow()) or "",
        })
        self._metrics.blocked.labels(kind, reason).inc()
        log.info("violation by %s (%s/%s): %s", user_id, kind, reason, name)
        return Penalty(name, int(n), until)

    async def _apply_penalty(self, user_id: str, name: str) -> int | None:
        kind, _, arg = name.partition(":")
        if kind == "mute":
            now = now_ms()
            return int(await self._scripts.mod_extend_mute(
                keys=[keys.user_muted(user_id)], args=[now + int(arg) * 1000, now]))
        if kind == "chat_ban":
            await self._redis.set(keys.user_chat_ban(user_id), "1")
        elif kind == "listing_ban":
            await self._redis.set(keys.user_listing_ban(user_id), "1")
        return None

    def blocked_anonymous(self, kind: str, reason: str) -> None:
        """Count content refused where no user is known yet (e.g. a name at sign-up)."""
        self._metrics.blocked.labels(kind, reason).inc()
        self._spawn(self._count_blocked(reason))

    async def _count_blocked(self, reason: str) -> None:
        try:
            await self._redis.hincrby(keys.MOD_BLOCKED, reason, 1)
        except Exception as e:  # a statistic; never worth failing for
            log.warning("counting a blocked item failed: %s", e)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait (briefly) for bookkeeping tasks, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=2)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- messages held by the guard for review ------------------------------------------------
    async def hold(self, msg: dict[str, Any], *, score: float, signals: list[list[str]]) -> None:
        """Queue a chat message the guard was unsure about; nobody but its author sees it yet."""
        async with self._db() as s, s.begin():
            s.add(HeldMessage(id=msg["id"], room_id=msg["room_id"], user_id=msg["user"]["id"], text=msg["text"],
                              message=msg, score=score, signals=signals, status="held", created_at=utcnow()))
        self._metrics.blocked.labels("chat", "held").inc()

    async def held(self, who: Principal, status: HeldStatus = "held", limit: int = 100) -> list[dict[str, Any]]:
        """The review queue: the oldest held messages first (or the newest decided ones)."""
        await self.require_moderator(who)
        q = _queue(HeldMessage, "held", status)
        async with self._db() as s:
            rows = (await s.execute(q.limit(limit))).scalars().all()
        return [render_held(h) for h in rows]

    async def decide_held(self, who: Principal, held_id: str, decision: HeldDecision) -> dict[str, Any]:
        """Approve (the room sees the message now) or reject (it counts as a violation).

        The decision is a conditional UPDATE from ``held``: of two moderators deciding at once,
        exactly one wins and acts; the other gets CONFLICT. The decided row is a labelled
        example for the guard (approved = ordinary chat, rejected = private trading).
        """
        await self.require_moderator(who)
        new = "approved" if decision == "approve" else "rejected"
        async with self._db() as s, s.begin():
            res = await s.execute(update(HeldMessage).where(HeldMessage.id == held_id, HeldMessage.status == "held")
                                  .values(status=new, decided_by=who.id, decided_at=utcnow()))
            won = bool(getattr(res, "rowcount", 0))
            row = await s.get(HeldMessage, held_id)
        if row is None:
            raise NotFound("no such held message")
        if not won:
            raise Conflict(f"held message already {row.status}")
        msg = dict(row.message)
        if new == "approved":
            await self._log.append(msg)
            await self._pusher.to_room(row.room_id, "chat:message", msg)
        else:
            detector, fragment = (row.signals[0][0], row.signals[0][1]) if row.signals else ("review", "")
            await self.violation(row.user_id, kind="chat", reason="private_trading", detector=detector,
                                 text=row.text, room_id=row.room_id, fragment=fragment)
        await self._pusher.to_user(row.user_id, "chat:held", {"id": held_id, "room_id": row.room_id, "status": new})
        await self.audit(who, f"held_{decision}", room_id=row.room_id, target_id=held_id, target_user_id=row.user_id)
        return render_held(row)

    async def expire_held(self) -> int:
        """Resolve the held messages no moderator decided within ``hold_expiry_s`` as ``expired``:
        never shown, no violation, and not a label (only a moderator's decision is one). The
        number expired here.

        One conditional UPDATE ``… WHERE status = 'held' AND created_at < cutoff RETURNING``, the
        same ``status = 'held'`` guard a moderator's decision uses: when both race, whichever
        commits first is the only outcome (the other matches no row; the moderator gets
        CONFLICT), also with several processes sweeping.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=self._hold_expiry_s)
        async with self._db() as s, s.begin():
            due = (select(HeldMessage.id).where(HeldMessage.status == "held", HeldMessage.created_at < cutoff)
                   .order_by(HeldMessage.created_at).limit(EXPIRE_BATCH).scalar_subquery())
            res = await s.execute(update(HeldMessage)
                                  .where(HeldMessage.id.in_(due), HeldMessage.status == "held")
                                  .values(status="expired", decided_by=None, decided_at=now)
                                  .returning(HeldMessage.id, HeldMessage.room_id, HeldMessage.user_id)
                                  .execution_options(synchronize_session=False))
            expired = res.all()
        for held_id, room_id, user_id in expired:
            self._metrics.blocked.labels("chat", "held_expired").inc()
            await self._pusher.to_user(user_id, "chat:held", {"id": held_id, "room_id": room_id, "status": "expired"})
        return len(expired)

    async def expiry_loop(self, stop: asyncio.Event) -> None:
        """Background loop: expire undecided held messages every ``hold_sweep_s``."""
        while not stop.is_set():
            try:
                while await self.expire_held() >= EXPIRE_BATCH:
                    pass
            except Exception as e:
                log_loop_error(log, "expiring held messages failed", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._hold_sweep_s)

    # --- room moderation ------------------------------------------------------------------------
    async def mute(self, who: Principal, room_id: str, user_id: str, seconds: int) -> dict[str, Any]:
        """Mute ``user_id`` in the room for ``seconds`` (0 lifts the mute)."""
        room = await self.require_room_mod(who, room_id)
        await self._target_user(room, user_id)
        return await self._mute_in_room(who, room.id, user_id, seconds)

    async def _mute_in_room(self, who: Principal, room_id: str, user_id: str, seconds: int,
                            detail: dict[str, Any] | None = None) -> dict[str, Any]:
        if not 0 <= seconds <= MAX_MUTE_S:
            raise Invalid(f"seconds must be 0..{MAX_MUTE_S}")
        key = keys.room_muted(room_id, user_id)
        if seconds == 0:
            await self._redis.delete(key)
            await self.audit(who, "unmute", room_id=room_id, target_user_id=user_id, detail=detail)
            return {"room_id": room_id, "user_id": user_id, "muted": False, "until": None}
        until = now_ms() + seconds * 1000
        # A moderator's explicit duration replaces the previous one (it may shorten it).
        await self._redis.set(key, str(until), px=seconds * 1000)
        await self.audit(who, "mute", room_id=room_id, target_user_id=user_id,
                         detail={"seconds": seconds, **(detail or {})})
        return {"room_id": room_id, "user_id": user_id, "muted": True, "until": iso_ms(until)}

    async def ban(self, who: Principal, room_id: str, user_id: str) -> dict[str, Any]:
        """Ban ``user_id`` from the room: kicked on every process, re-joining refused."""
        room = await self.require_room_mod(who, room_id)
        await self._target_user(room, user_id)
        return await self._ban_in_room(who, room.id, user_id)

    async def _ban_in_room(self, who: Principal, room_id: str, user_id: str,
                           detail: dict[str, Any] | None = None) -> dict[str, Any]:
        # State first, kick second: a kicked connection that races to re-join meets the ban.
        await self._redis.sadd(keys.room_banned(room_id), user_id)
        await self._pusher.kick(room_id, user_id)
        await self.audit(who, "ban", room_id=room_id, target_user_id=user_id, detail=detail)
        return {"room_id": room_id, "user_id": user_id, "banned": True}

    async def unban(self, who: Principal, room_id: str, user_id: str) -> dict[str, Any]:
        room = await self.require_room_mod(who, room_id)
        await self._redis.srem(keys.room_banned(room.id), user_id)
        await self.audit(who, "unban", room_id=room.id, target_user_id=user_id)
        return {"room_id": room.id, "user_id": user_id, "banned": False}

    async def set_slowmode(self, who: Principal, room_id: str, seconds: int) -> dict[str, Any]:
        """At most one message per ``seconds`` per user in the room (0 turns it off)."""
        room = await self.require_room_mod(who, room_id)
        if not 0 <= seconds <= 3600:
            raise Invalid("seconds must be 0..3600")
        if seconds:
            await self._redis.set(keys.room_slowmode(room.id), str(seconds))
        else:
            await self._redis.delete(keys.room_slowmode(room.id))
        await self.audit(who, "slowmode", room_id=room.id, detail={"seconds": seconds})
        await self._pusher.to_room(room.id, "chat:slowmode", {"room_id": room.id, "seconds": seconds})
        return {"room_id": room.id, "slowmode": seconds}

    async def room_state(self, who: Principal, room_id: str) -> dict[str, Any]:
        """What the studio shows: who is banned, and the slow-mode interval."""
        room = await self.require_room_mod(who, room_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.smembers(keys.room_banned(room.id))
        pipe.get(keys.room_slowmode(room.id))
        banned, slow = await pipe.execute()
        return {"room_id": room.id, "banned": sorted(banned), "slowmode": int(slow or 0)}

    async def delete_message(self, who: Principal, msg_id: str) -> dict[str, Any]:
        """Delete a message: gone from the history, ``chat:deleted`` pushed, marked in SQL."""
        found = await self._log.find(msg_id)
        if found is None:
            raise NotFound("no such message")
        room_id, author = found
        await self.require_room_mod(who, room_id)
        return await self._delete(who, room_id, msg_id, author)

    async def _delete(self, who: Principal, room_id: str, msg_id: str, author: str,
                      detail: dict[str, Any] | None = None) -> dict[str, Any]:
        await self._log.remove(room_id, msg_id)
        await self._pusher.to_room(room_id, "chat:deleted", {"id": msg_id, "room_id": room_id})
        await self.audit(who, "delete", room_id=room_id, target_user_id=author, target_id=msg_id, detail=detail)
        return {"id": msg_id, "room_id": room_id, "deleted": True}

    # --- reports --------------------------------------------------------------------------------
    async def report(self, who: Principal, target: ReportTarget, target_id: str, reason: str) -> dict[str, Any]:
        """Any user reports a message, room, card or user; it waits in the moderators' queue."""
        try:
            await self._ratelimit.take(who.id, "report", REPORT_RATE_PER_S, REPORT_BURST)
        except RateLimited as e:
            raise RateLimited("too many reports; try again later") from e
        await self._resolve_target(target, target_id)  # NOT_FOUND for what does not exist
        row = Report(id=new_id(), reporter_id=who.id, target=target, target_id=target_id, reason=reason,
                     status="open", resolution=None, resolved_by=None, created_at=utcnow(), resolved_at=None)
        async with self._db() as s, s.begin():
            s.add(row)
        return render_report(row)

    async def _resolve_target(self, target: str, target_id: str) -> tuple[str | None, str]:
        """``(room_id, responsible user)`` of a report target; NOT_FOUND when it does not exist.

        A message is its author's (in its room); a room or card is its streamer's; a user is
        themselves (no room).
        """
        if target == "message":
            found = await self._log.find(target_id)
            if found is None:
                raise NotFound("no such message")
            return found
        async with self._db() as s:
            if target == "user":
                if await s.get(User, target_id) is None:
                    raise NotFound("no such user")
                return None, target_id
            if target == "card":
                card = await s.get(Card, target_id)
                if card is None:
                    raise NotFound("no such card")
                target_id = card.room_id
            room = await s.get(Room, target_id)
            if room is None:
                raise NotFound(f"no such {target}")
            return room.id, room.streamer_id

    async def reports(self, who: Principal, status: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        """The moderators' queue: oldest open reports first (or the newest resolved ones)."""
        await self.require_moderator(who)
        q = _queue(Report, "open", status)
        async with self._db() as s:
            rows = (await s.execute(q.limit(limit))).scalars().all()
            subjects = await report_subjects(s, rows)
        return [{**render_report(r), **subjects.get(r.id, {})} for r in rows]

    async def resolve(self, who: Principal, report_id: str, action: ReportAction,
                      seconds: int | None = None) -> dict[str, Any]:
        """Close a report with an action on what it points at.

        ``delete`` removes a reported message. ``mute``/``ban`` act on the responsible user:
        for a message, in its room (room mute / room ban); for a user, platform-wide (mute /
        chat ban); for a room or card, on its streamer (mute / listing ban).
        """
        await self.require_moderator(who)
        async with self._db() as s:
            report = await s.get(Report, report_id)
        if report is None:
            raise NotFound("no such report")
        if report.status != "open":
            raise Conflict("report already resolved")
        if action == "delete" and report.target != "message":
            raise Invalid("only a reported message can be deleted")
        # Claim the report first (a conditional UPDATE): of two moderators resolving it at
        # once, exactly one acts; the other gets CONFLICT and changes nothing.
        if not await self._set_report(report_id, "open", "resolved", action, who.id):
            raise Conflict("report already resolved")
        try:
            result = await self._act_on_report(who, report, action, seconds)
        except Exception:  # the action was refused (e.g. FORBIDDEN): the report stays open
            await self._set_report(report_id, "resolved", "open", None, None)
            raise
        async with self._db() as s:
            report = await s.get(Report, report_id)
        assert report is not None
        await self.audit(who, "resolve", target_id=report_id, target_user_id=None,
                         detail={"action": action, "target": report.target, "target_id": report.target_id})
        return {"report": render_report(report), "result": result}

    async def _set_report(self, report_id: str, old: str, new: str, resolution: str | None,
                          by: str | None) -> bool:
        async with self._db() as s, s.begin():
            res = await s.execute(update(Report).where(Report.id == report_id, Report.status == old).values(
                status=new, resolution=resolution, resolved_by=by, resolved_at=utcnow() if by else None))
        return bool(getattr(res, "rowcount", 0))

    async def _act_on_report(self, who: Principal, report: Report, action: str,
                             seconds: int | None) -> dict[str, Any]:
        if action == "dismiss":
            return {}
        detail = {"report_id": report.id}
        room_id, user_id = await self._resolve_target(report.target, report.target_id)
        if action == "delete":
            assert room_id is not None  # a message always has a room
            return await self._delete(who, room_id, report.target_id, user_id, detail)
        if report.target == "message":
            assert room_id is not None
            await self._target_user(await self._rooms.get(room_id), user_id)
            if action == "mute":
                return await self._mute_in_room(who, room_id, user_id, seconds or DEFAULT_MUTE_S, detail)
            return await self._ban_in_room(who, room_id, user_id, detail)
        return await self._platform_penalty(who, report.target, user_id, action, seconds, detail)

    async def _platform_penalty(self, who: Principal, target: str, user_id: str, action: str, seconds: int | None,
                                detail: dict[str, Any]) -> dict[str, Any]:
        await self._target_user(None, user_id)
        if action == "mute":
            secs = seconds or DEFAULT_MUTE_S
            if not 1 <= secs <= MAX_MUTE_S:
                raise Invalid(f"seconds must be 1..{MAX_MUTE_S}")
            until = now_ms() + secs * 1000
            await self._redis.set(keys.user_muted(user_id), str(until), px=secs * 1000)
            await self.audit(who, "mute", target_user_id=user_id, detail={"seconds": secs, "scope": "platform",
                                                                         **detail})
            return {"user_id": user_id, "muted": True, "until": iso_ms(until)}
        key, what = ((keys.user_chat_ban(user_id), "chat_ban") if target == "user"
                     else (keys.user_listing_ban(user_id), "listing_ban"))
        await self._redis.set(key, "1")
        await self.audit(who, what, target_user_id=user_id, detail=detail)
        return {"user_id": user_id, what: True}

    # --- audit log and statistics ------------------------------------------------------------
    async def audit(self, who: Principal, action: str, *, room_id: str | None = None,
                    target_user_id: str | None = None, target_id: str | None = None,
                    detail: dict[str, Any] | None = None) -> None:
        """One row of the audit log per moderation action."""
        row = ModerationAction(id=new_id(), actor_id=who.id, action=action, room_id=room_id,
                               target_user_id=target_user_id, target_id=target_id, detail=detail,
                               created_at=utcnow())
        async with self._db() as s, s.begin():
            s.add(row)

    async def actions(self, who: Principal, *, limit: int = 100, room_id: str | None = None) -> list[dict[str, Any]]:
        """The audit log, newest first (moderators)."""
        await self.require_moderator(who)
        q = select(ModerationAction).order_by(ModerationAction.created_at.desc(), ModerationAction.id.desc())
        if room_id:
            q = q.where(ModerationAction.room_id == room_id)
        async with self._db() as s:
            rows = (await s.execute(q.limit(limit))).scalars().all()
        return [{"id": a.id, "actor_id": a.actor_id, "action": a.action, "room_id": a.room_id,
                 "target_user_id": a.target_user_id, "target_id": a.target_id, "detail": a.detail,
                 "created_at": iso(a.created_at)} for a in rows]

    async def stats(self, who: Principal) -> dict[str, Any]:
        """What trust & safety handled: blocked content, violations, penalties, reports, actions."""
        await self.require_moderator(who)
        blocked = {k: int(v) for k, v in (await self._redis.hgetall(keys.MOD_BLOCKED)).items()}

        async def grouped(s: AsyncSession, col: Any) -> dict[str, int]:
            rows = (await s.execute(select(col, func.count()).group_by(col))).all()
            return {str(k): int(n) for k, n in rows}

        async with self._db() as s:
            by_reason = await grouped(s, Violation.reason)
            by_kind = await grouped(s, Violation.kind)
            penalties = await grouped(s, Violation.penalty)
            reports = await grouped(s, Report.status)
            actions = await grouped(s, ModerationAction.action)
        return {
            "blocked": {"total": sum(blocked.values()), "by_reason": blocked},
            "violations": {"total": sum(by_reason.values()), "by_reason": by_reason, "by_kind": by_kind},
            "penalties": penalties,
            "reports": {"open": reports.get("open", 0), "resolved": reports.get("resolved", 0)},
            "actions": actions,
        }


def _queue(model: type[Report] | type[HeldMessage], pending: str, status: str) -> Select[Any]:
    """A moderators' queue: the oldest ``pending`` rows first, or else the newest rows with
    ``status`` ("all": whatever their status)."""
    q = select(model)
    if status == pending:
        return q.where(model.status == pending).order_by(model.created_at, model.id)
    if status != "all":
        q = q.where(model.status == status)
    return q.order_by(model.created_at.desc(), model.id.desc())


async def report_subjects(s: AsyncSession, rows: Sequence[Report]) -> dict[str, dict[str, Any]]:
    """What each report is about, for the moderator: the message's text or the room's or card's
    title, its author (``{"id","name"}``), its room and when it was written (``target_at``)."""
    want: dict[str, set[str]] = {"message": set(), "card": set(), "room": set(), "user": set()}
    for r in rows:
        want.setdefault(r.target, set()).add(r.target_id)
    msgs = {m.id: m for m in (await s.execute(select(ChatMessage).where(ChatMessage.id.in_(want["message"]))))
            .scalars()} if want["message"] else {}
    cards = {c.id: c for c in (await s.execute(select(Card).where(Card.id.in_(want["card"])))).scalars()} \
        if want["card"] else {}
    room_ids = want["room"] | {c.room_id for c in cards.values()}
    rooms = {x.id: x for x in (await s.execute(select(Room).where(Room.id.in_(room_ids)))).scalars()} \
        if room_ids else {}
    user_ids = want["user"] | {x.streamer_id for x in rooms.values()}
    users = {u.id: u for u in (await s.execute(select(User).where(User.id.in_(user_ids)))).scalars()} \
        if user_ids else {}

    def person(uid: str | None, name: str | None = None) -> dict[str, Any] | None:
        if uid is None:
            return None
        u = users.get(uid)
        return {"id": uid, "name": name or (u.name if u else "")}

    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.target == "message" and (m := msgs.get(r.target_id)) is not None:
            out[r.id] = {"text": m.text, "author": person(m.user_id, m.user_name), "room_id": m.room_id,
                         "target_at": iso(m.ts)}
        elif r.target == "card" and (c := cards.get(r.target_id)) is not None:
            room = rooms.get(c.room_id)
            out[r.id] = {"title": c.title, "author": person(room.streamer_id if room else None),
                         "room_id": c.room_id, "target_at": iso(c.created_at)}
        elif r.target == "room" and (room := rooms.get(r.target_id)) is not None:
            out[r.id] = {"title": room.title, "author": person(room.streamer_id), "room_id": room.id,
                         "target_at": iso(room.created_at)}
        elif r.target == "user" and r.target_id in users:
            out[r.id] = {"author": person(r.target_id), "room_id": None, "target_at": None}
    return out


def render_report(r: Report) -> dict[str, Any]:
    return {"id": r.id, "reporter_id": r.reporter_id, "target": r.target, "target_id": r.target_id,
            "reason": r.reason, "status": r.status, "resolution": r.resolution, "resolved_by": r.resolved_by,
            "created_at": iso(r.created_at), "resolved_at": iso(r.resolved_at)}


__all__ = ["MessageLog", "ModerationService", "Penalty", "penalty_for"]


def render_held(h: HeldMessage) -> dict[str, Any]:
    return {"id": h.id, "room_id": h.room_id, "user_id": h.user_id, "text": h.text, "message": h.message,
            "score": h.score, "signals": h.signals, "status": h.status, "decided_by": h.decided_by,
            "created_at": iso(h.created_at), "decided_at": iso(h.decided_at)}
