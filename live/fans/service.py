"""The fans domain wired into the app: ``install(svc)`` builds the services, hooks them into
rooms (go-live, snapshot), chat (keyword entries) and flash-buy (followers-only cards), and
adds the lucky-bag draw loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from live.core import keys
from live.core.auth import Principal
from live.core.errors import log_loop_error
from live.core.ids import iso
from live.core.models import Card, Room, User
from live.fans.follows import FollowService
from live.fans.lucky import LuckyService
from live.fans.notify import NotifyService
from live.fans.stats import shop_stats

if TYPE_CHECKING:
    from live.app.services import Services

log = logging.getLogger(__name__)
SCRIPTS = ["fans_mark", "lucky_enter", "lucky_close"]
REGATE_EVERY_S = 5.0
FOLLOW_RATE_PER_S, FOLLOW_BURST = 5.0, 20  # follow/unfollow toggling is a SQL write each time
COUNT_TTL_S = 1.0  # room snapshots (a join storm) read a streamer's follower count at most once a second


class FansService:
    def __init__(self, svc: Services) -> None:
        dialect = svc.engine.dialect.name
        self.svc = svc
        self.follows = FollowService(svc.db, svc.redis, svc.scripts, dialect)
        self.notify = NotifyService(svc.db, svc.bus, self.follows, dialect, svc.settings.notifications_keep)
        self.lucky = LuckyService(svc, self.follows)
        self._counts: dict[str, tuple[float, int]] = {}

    async def follow(self, who: Principal, user_id: str) -> dict[str, Any]:
        await self.svc.ratelimit.take(who.id, "follow", FOLLOW_RATE_PER_S, FOLLOW_BURST)
        self._counts.pop(user_id, None)
        return await self.follows.follow(who, user_id)

    async def unfollow(self, who: Principal, user_id: str) -> dict[str, Any]:
        await self.svc.ratelimit.take(who.id, "follow", FOLLOW_RATE_PER_S, FOLLOW_BURST)
        self._counts.pop(user_id, None)
        return await self.follows.unfollow(who, user_id)

    async def gate_card(self, card_id: str, streamer_id: str) -> None:
        """``flash`` hook: make a new card followers-only before it goes on sale."""
        await self.follows.gate_card(card_id, streamer_id)

    async def room_extras(self, room: Room, streamer: User) -> dict[str, Any]:
        """``rooms.extras`` hook: the streamer's follower count (and the announced start)."""
        now = time.monotonic()
        hit = self._counts.get(streamer.id)
        if hit is None or now - hit[0] > COUNT_TTL_S:
            if len(self._counts) > 10_000:
                self._counts.clear()
            hit = self._counts[streamer.id] = (now, await self.follows.count(streamer.id))
        return {"followers": hit[1], "scheduled_at": iso(getattr(room, "scheduled_at", None))}

    async def regate_once(self) -> int:
        """Followers-only cards still selling whose gate Redis lost (data loss): gated again.
        Returns how many were restored."""
        async with self.svc.db() as s:
            rows = (await s.execute(select(Card.id, Room.streamer_id).join(Room, Room.id == Card.room_id)
                                    .where(Card.audience == "followers", Card.status != "closed"))).all()
        restored = 0
        for card_id, streamer_id in rows:
            if not await self.svc.redis.hexists(keys.card_fans(card_id), "*"):
                log.warning("card %s lost its followers-only gate in Redis: restoring it from SQL", card_id)
                await self.follows.gate_card(card_id, streamer_id)
                restored += 1
        return restored

    async def regate_loop(self, stop: asyncio.Event) -> None:
        """At start and every few seconds: after a Redis data loss a rebuilt card must not stay
        open to everyone (the card's rebuild from SQL knows nothing of its gate)."""
        while not stop.is_set():
            try:
                await self.regate_once()
            except Exception as e:
                log_loop_error(log, "regate failed", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REGATE_EVERY_S)

    async def stats(self, who: Principal) -> dict[str, Any]:
        if self.svc.orders is not None:
            await self.svc.orders.flush()  # orders are written behind: count what was just sold
        return await shop_stats(self.svc.db, self.follows, who)


def install(svc: Services) -> None:
    fans = FansService(svc)
    svc.fans = fans
    svc.rooms.on_live.append(fans.notify.room_live)
    svc.rooms.extras.append(fans.room_extras)
    if svc.chat is not None:
        svc.chat.on_message.append(fans.lucky.on_chat)
    svc.bus.subscribe(keys.CH_FANS_LIVE, fans.notify.on_bus)
    svc.add_loop("lucky-draw", fans.lucky.draw_loop, "background")
    svc.add_loop("fans-regate", fans.regate_loop, "background")
    svc.closers.append(fans.notify.close)
