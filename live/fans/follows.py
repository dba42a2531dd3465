"""Follows: who follows whom, exact follower counts, and the Redis mirrors buy.lua reads.

SQL is the durable record: ``follows`` (a unique (follower, followee) pair, so following twice
changes nothing) and ``follow_counts`` (changed in the same transaction as the row it counts,
only when a row was really inserted or deleted, so the count stays exact however follows and
unfollows race).

Followers-only cards need the follower set inside the buy script, whose keys all share the
card's hash tag; so each gated card carries its own mirror of the streamer's followers under
that tag (``keys.card_fans``). Every follow change takes a version from the streamer's counter
and writes "version:state" with ``fans_mark.lua`` (newest version wins), so out-of-order
writes converge (see docs/fans.md for why the order of steps makes this exact).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.core import keys
from live.core.auth import Principal
from live.core.errors import Invalid, NotFound
from live.core.ids import iso, utcnow
from live.core.models import Follow, FollowCount, User

# SQL IN lists and Lua ARGV are chunked: big enough to amortise a round trip, small enough for
# every database's parameter limit.
CHUNK = 500


def upsert(dialect: str, model: Any) -> Any:
    """INSERT ... ON CONFLICT for the two dialects the project runs on."""
    table = cast(Table, model.__table__)
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def chunks(items: list[str], size: int = CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def among(db: async_sessionmaker[AsyncSession], column: Any, condition: Any,
                user_ids: Iterable[str]) -> set[str]:
    """Which of ``user_ids`` appear in ``column`` where ``condition`` holds: one indexed query per
    chunk of ids, never one per user."""
    ids = sorted(set(user_ids))
    found: set[str] = set()
    async with db() as s:
        for part in chunks(ids):
            found.update((await s.execute(select(column).where(condition, column.in_(part)))).scalars())
    return found


class FollowService:
    def __init__(self, db: async_sessionmaker[AsyncSession], redis: Any, scripts: Any, dialect: str) -> None:
        self._db = db
        self._redis = redis
        self._scripts = scripts
        self._dialect = dialect

    # --- changes ------------------------------------------------------------------------------
    async def follow(self, who: Principal, user_id: str) -> dict[str, Any]:
        """Follow ``user_id`` (idempotent). ``{"user_id","following":true,"followers"}``."""
        if user_id == who.id:
            raise Invalid("you cannot follow yourself")
        async with self._db() as s, s.begin():
            if await s.get(User, user_id) is None:
                raise NotFound("no such user")
            ins = upsert(self._dialect, Follow).values(follower_id=who.id, followee_id=user_id, created_at=utcnow())
            added = (await s.execute(ins.on_conflict_do_nothing().returning(Follow.follower_id))).first()
            if added is not None:
                bump = upsert(self._dialect, FollowCount).values(user_id=user_id, followers=1)
                await s.execute(bump.on_conflict_do_update(
                    index_elements=["user_id"], set_={"followers": FollowCount.followers + 1}))
        await self._mirror(user_id, who.id)
        return {"user_id": user_id, "following": True, "followers": await self.count(user_id)}

    async def unfollow(self, who: Principal, user_id: str) -> dict[str, Any]:
        """Stop following (idempotent)."""
        async with self._db() as s, s.begin():
            gone = (await s.execute(delete(Follow).where(Follow.follower_id == who.id, Follow.followee_id == user_id)
                                    .returning(Follow.follower_id))).first()
            if gone is not None:
                await s.execute(update(FollowCount).where(FollowCount.user_id == user_id)
                                .values(followers=FollowCount.followers - 1))
        await self._mirror(user_id, who.id)
        return {"user_id": user_id, "following": False, "followers": await self.count(user_id)}

    async def _mirror(self, streamer: str, follower: str) -> None:
        """Bring the follower's state into every gate of the streamer's followers-only cards.

        Order matters: SQL commit, then the gated-card list, then a version, then the state read
        from SQL. A card whose gate is being filled concurrently either is in the list (and the
        newest version wins in its mirror) or registered after our commit (and its own SQL read
        sees our change)."""
        cards = await self._selling(streamer)
        if not cards:
            return
        version = int(await self._redis.incr(keys.fans_seq(streamer)))
        state = "1" if await self.is_follower(follower, streamer) else "0"
        for card_id in cards:
            await self._scripts.fans_mark(keys=[keys.card_fans(card_id)], args=[follower, version, state])

    async def _selling(self, streamer: str) -> list[str]:
        """The streamer's gated cards that may still sell; closed ones leave the list (so a
        follow never walks every followers-only sale the streamer ever ran)."""
        cards = sorted(await self._redis.smembers(keys.fans_gated_cards(streamer)))
        if not cards:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for card_id in cards:
            pipe.hget(keys.card_state(card_id), "status")
        statuses = await pipe.execute()
        closed = [c for c, st in zip(cards, statuses, strict=True) if st == "closed"]
        if closed:
            await self._redis.srem(keys.fans_gated_cards(streamer), *closed)
        return [c for c, st in zip(cards, statuses, strict=True) if st != "closed"]

    async def gate_card(self, card_id: str, streamer: str) -> None:
        """Make a card followers-only: its gate holds the audience and a mirror of the followers.

        Called before the card is first written to Redis' card state, so no tap sees it ungated."""
        await self._redis.hset(keys.card_fans(card_id), "*", "followers")
        await self._redis.sadd(keys.fans_gated_cards(streamer), card_id)
        version = int(await self._redis.incr(keys.fans_seq(streamer)))
        async for page in self.follower_pages(streamer):
            args: list[Any] = []
            for u in page:
                args += [u, version, "1"]
            await self._scripts.fans_mark(keys=[keys.card_fans(card_id)], args=args)

    # --- reading ---------------------------------------------------------------------------------
    async def count(self, user_id: str) -> int:
        async with self._db() as s:
            n = (await s.execute(select(FollowCount.followers).where(FollowCount.user_id == user_id))).scalar()
        return int(n or 0)

    async def user(self, user_id: str) -> dict[str, Any]:
        """``GET /api/users/{id}``: public profile with the follower count."""
        async with self._db() as s:
            row = (await s.execute(select(User, FollowCount.followers)
                                   .outerjoin(FollowCount, FollowCount.user_id == User.id)
                                   .where(User.id == user_id))).first()
        if row is None:
            raise NotFound("no such user")
        user, n = row
        return {"id": user.id, "name": user.name, "role": user.role, "followers": int(n or 0)}

    async def is_follower(self, follower: str, followee: str) -> bool:
        async with self._db() as s:
            row = (await s.execute(select(Follow.follower_id).where(
                Follow.follower_id == follower, Follow.followee_id == followee))).first()
        return row is not None

    async def following(self, who: Principal, limit: int = 200) -> list[dict[str, Any]]:
        """Accounts ``who`` follows, newest first, with their follower counts."""
        async with self._db() as s:
            rows = (await s.execute(
                select(User, Follow.created_at, FollowCount.followers)
                .join(Follow, Follow.followee_id == User.id)
                .outerjoin(FollowCount, FollowCount.user_id == User.id)
                .where(Follow.follower_id == who.id).order_by(Follow.created_at.desc()).limit(limit))).all()
        return [{"id": u.id, "name": u.name, "role": u.role, "followers": int(n or 0), "since": iso(at)}
                for u, at, n in rows]

    async def followers_among(self, streamer: str, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` follow ``streamer``."""
        return await among(self._db, Follow.follower_id, Follow.followee_id == streamer, user_ids)

    async def follower_pages(self, streamer: str, size: int = 1000) -> AsyncIterator[list[str]]:
        """All follower ids of ``streamer`` in pages (keyset on the follower id)."""
        after = ""
        while True:
            async with self._db() as s:
                page = list((await s.execute(select(Follow.follower_id).where(
                    Follow.followee_id == streamer, Follow.follower_id > after)
                    .order_by(Follow.follower_id).limit(size))).scalars())
            if not page:
                return
            yield page
            after = page[-1]

    async def total(self, streamer: str) -> int:
        """The count straight from the rows (used by tests and checks to confirm the counter)."""
        async with self._db() as s:
            return int((await s.execute(select(func.count()).select_from(Follow)
                                        .where(Follow.followee_id == streamer))).scalar() or 0)
