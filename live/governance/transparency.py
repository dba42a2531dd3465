"""Public disclosure (公示): a month's figures computed from the audit records.

- private trading: the guard's ``violations`` rows with reason ``private_trading`` (every
  refused chat message, title, card text or image, written through the chat stream), the
  distinct users they penalised and the distinct rooms they happened in;
- violations: the month's shop violations by kind (revoked ones excluded: an overturned finding
  is no finding) and the distinct shops penalised;
- after-sales: cases opened, orders refunded and the amount refunded in the month;
- notices: the month's shop violations naming only the shop (its approved shop name, else its
  display name), the kind, the restriction it stood under, and when.

A month that ended more than ``SETTLE`` ago is computed once and kept in Redis for good (the
audit records of a closed month do not change; the grace lets late writes of the chat stream
land first); the running month is cached for ``transparency_cache_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.commerce.views import money
from live.core import keys
from live.core.ids import iso
from live.core.models import AfterSaleCase, Order, ShopViolation, Violation
from live.governance.standing import KINDS

SETTLE = timedelta(hours=1)
CURRENT_TTL_S = 30


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of ``YYYY-MM`` in UTC."""
    y, m = int(month[:4]), int(month[5:7])
    start = datetime(y, m, 1, tzinfo=UTC)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
    return start, end


class Transparency:
    def __init__(self, db: async_sessionmaker[AsyncSession], redis: Any, clock: Callable[[], datetime],
                 shop_name: Callable[[str], Any]) -> None:
        self._db = db
        self._redis = redis
        self._clock = clock
        self._shop_name = shop_name

    async def month(self, month: str) -> dict[str, Any]:
        start, end = month_bounds(month)
        settled = self._clock() >= end + SETTLE
        key = keys.transparency(month) if settled else keys.transparency(month) + ":running"
        raw = await self._redis.get(key)
        if raw:
            return dict(orjson.loads(raw))
        out = await self.compute(month, start, end)
        if settled:
            await self._redis.set(key, orjson.dumps(out), nx=True)  # the first to finish wins, for good
            raw = await self._redis.get(key)
            return dict(orjson.loads(raw)) if raw else out
        await self._redis.set(key, orjson.dumps(out), ex=CURRENT_TTL_S)
        return out

    async def forget(self, at: datetime) -> None:
        """A violation was recorded or revoked: the running month's notices show it at once."""
        await self._redis.delete(keys.transparency(at.strftime("%Y-%m")) + ":running")

    async def compute(self, month: str, start: datetime, end: datetime) -> dict[str, Any]:
        in_month_v = (Violation.created_at >= start, Violation.created_at < end,
                      Violation.reason == "private_trading")
        in_month_s = (ShopViolation.created_at >= start, ShopViolation.created_at < end,
                      ShopViolation.status != "revoked")
        async with self._db() as s:
            blocked, users, rooms = (await s.execute(select(
                func.count(), func.count(distinct(Violation.user_id)), func.count(distinct(Violation.room_id)))
                .where(*in_month_v))).one()
            by_kind = dict.fromkeys(KINDS, 0)
            for kind, n in (await s.execute(select(ShopViolation.kind, func.count()).where(*in_month_s)
                                            .group_by(ShopViolation.kind))).all():
                by_kind[kind] = int(n)
            shops = (await s.execute(select(func.count(distinct(ShopViolation.user_id))).where(*in_month_s))).scalar()
            cases = (await s.execute(select(func.count()).select_from(AfterSaleCase).where(
                AfterSaleCase.created_at >= start, AfterSaleCase.created_at < end))).scalar()
            refunded, amount = (await s.execute(select(func.count(), func.coalesce(
                func.sum(Order.refunded_amount_cents), 0)).where(
                Order.refunded_at >= start, Order.refunded_at < end, Order.refunded_amount_cents > 0))).one()
            rows = (await s.execute(select(ShopViolation).where(*in_month_s)
                                    .order_by(ShopViolation.created_at.desc()).limit(200))).scalars().all()
        notices = [{"shop_name": await self._shop_name(v.user_id), "kind": v.kind,
                    "restriction": v.restriction or None, "at": iso(v.created_at)} for v in rows]
        return {
            "month": month,
            "private_trading": {"messages_blocked": int(blocked), "users_penalised": int(users),
                                "rooms_actioned": int(rooms)},
            "violations": {"by_kind": by_kind, "shops_penalised": int(shops or 0)},
            "after_sales": {"cases": int(cases or 0), "refunded_orders": int(refunded),
                            "refunded_amount": money(int(amount))},
            "notices": notices,
        }
