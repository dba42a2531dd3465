"""The fans domain wired into the app: ``install(svc)`` builds the services, hooks them into
rooms (go-live, snapshot), chat (keyword entries) and flash-buy (followers-only cards), and
adds the lucky-bag draw loop."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from live.core import keys
from live.core.auth import Principal
from live.core.ids import iso
from live.core.models import Room, User
from live.fans.follows import FollowService
from live.fans.lucky import LuckyService
from live.fans.notify import NotifyService
from live.fans.stats import shop_stats

if TYPE_CHECKING:
    from live.app.services import Services

SCRIPTS = ["fans_mark", "lucky_enter", "lucky_close"]
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
        self._counts.pop(user_id, None)
        return await self.follows.follow(who, user_id)

    async def unfollow(self, who: Principal, user_id: str) -> dict[str, Any]:
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
    svc.loops.append(("lucky-draw", fans.lucky.draw_loop))
    svc.closers.append(fans.notify.close)
