"""A shop's standing: violations and their points, the tiers they reach, the restrictions those
impose, and admission review. ``require(user_id, action)`` is the one check every entry point
calls (listing, scheduled sales, going live, payouts).

The standing is computed from SQL (active, unexpired, unrevoked violations and the newest
application) and cached per process behind a per-shop Redis counter that every change bumps,
so a violation or an overturned appeal on one process restricts or restores the shop on every
process at its next request; the cache also lapses when the earliest active violation expires,
so decay needs no sweeper. Time comes from ``clock`` (injected: tests run decay on a simulated
clock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.core import keys
from live.core.errors import Forbidden
from live.core.ids import iso, utcnow
from live.core.models import ShopApplication, ShopViolation
from live.core.settings import Settings

Action = Literal["listing", "scheduled_sale", "live", "payout"]
KINDS = ("private_trading", "counterfeit", "misleading", "after_sales", "other")
# Which restrictions refuse which action (each tier keeps the restrictions of the tiers below).
BLOCKS: dict[str, tuple[str, ...]] = {
    "listing": ("no_listing", "shop_closed"),
    "scheduled_sale": ("no_scheduled_sales", "no_listing", "shop_closed"),
    "live": ("no_live", "shop_closed"),
    # A closed shop's money is held for the buyers' claims; ``no_payout`` may be a tier of its own.
    "payout": ("no_payout", "shop_closed"),
}
FAR = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass
class Standing:
    points: int
    tier: int
    restrictions: list[str]
    admitted: bool
    violations: list[ShopViolation] = field(default_factory=list)
    valid_until: datetime = FAR

    def public(self) -> dict[str, Any]:
        return {"points": self.points, "tier": self.tier, "restrictions": list(self.restrictions)}


def tier_of(tiers: dict[int, str], points: int) -> tuple[int, list[str]]:
    """(the highest tier threshold reached, the restrictions of it and every lower tier)."""
    reached = sorted(t for t in tiers if points >= t)
    return (reached[-1] if reached else 0), [tiers[t] for t in reached]


def violation_status(v: ShopViolation, now: datetime) -> str:
    if v.status == "revoked":
        return "revoked"
    return "expired" if aware(v.expires_at) <= now else "active"


def aware(dt: datetime) -> datetime:
    """SQLite hands datetimes back naive (they were stored in UTC)."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def violation_view(v: ShopViolation, now: datetime) -> dict[str, Any]:
    from live.commerce.views import money

    return {"id": v.id, "user_id": v.user_id, "kind": v.kind, "points": v.points, "note": v.note,
            "deduction": money(v.deduction_cents), "at": iso(v.created_at), "expires_at": iso(v.expires_at),
            "status": violation_status(v, now)}


class StandingService:
    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], redis: Any) -> None:
        self.settings = settings
        self._db = db
        self._redis = redis
        self.clock: Callable[[], datetime] = utcnow
        self._cache: dict[str, tuple[str, Standing]] = {}

    def decay(self) -> timedelta:
        return timedelta(seconds=self.settings.violation_decay_s)

    async def changed(self, user_id: str) -> None:
        """Every process drops its cached standing of this shop (next request re-reads SQL)."""
        await self._redis.incr(keys.shop_standing_version(user_id))

    async def compute(self, user_id: str) -> Standing:
        now = self.clock()
        async with self._db() as s:
            rows = list((await s.execute(select(ShopViolation).where(ShopViolation.user_id == user_id)
                                         .order_by(ShopViolation.created_at.desc()))).scalars())
            app = None
            if self.settings.shop_admission == "review":
                app = (await s.execute(select(ShopApplication).where(ShopApplication.user_id == user_id)
                                       .where(ShopApplication.status == "approved").limit(1))).scalar()
        active = [v for v in rows if violation_status(v, now) == "active"]
        points = sum(v.points for v in active)
        tier, restrictions = tier_of(self.settings.shop_tiers, points)
        until = min((aware(v.expires_at) for v in active), default=FAR)
        return Standing(points, tier, restrictions, self.settings.shop_admission == "open" or app is not None,
                        rows, until)

    async def get(self, user_id: str) -> Standing:
        """The shop's standing, from this process's cache while its Redis version holds."""
        version = str(await self._redis.get(keys.shop_standing_version(user_id)) or "0")
        hit = self._cache.get(user_id)
        if hit is not None and hit[0] == version and self.clock() < hit[1].valid_until:
            return hit[1]
        st = await self.compute(user_id)
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[user_id] = (version, st)
        return st

    async def require(self, user_id: str, action: Action) -> None:
        """``FORBIDDEN`` with ``restriction`` when the shop may not take ``action`` now."""
        st = await self.get(user_id)
        if action in ("listing", "scheduled_sale") and not st.admitted:
            raise Forbidden("your shop application has not been approved yet", restriction="admission")
        for r in st.restrictions:
            if r in BLOCKS[action]:
                raise Forbidden(f"your shop is restricted: {r}", restriction=r)
