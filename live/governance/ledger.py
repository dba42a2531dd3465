"""A shop's deposit and settlement ledger, in SQL, in cents, exact.

Entries: ``deposit`` (+, deposit bucket), ``sale`` (+, balance; an order's paid amount),
``refund`` (−, balance; what after-sales gave back), ``deduction`` (−, deposit first then balance;
a violation's; a revoked violation adds the same amounts back as ``deduction`` entries with a
positive sign), ``payout`` (−, balance). ``(kind, source)`` is unique, so every entry is written
once whatever retries, restarts and racing processes do.

Sales and refunds are derived from the orders (``paid_amount_cents``, ``refunded_amount_cents``,
written by the after-sales persister) by a sweeper on every process, rather than hooked into
the after-sales scripts: the orders are the source of truth and the sweeper converges on them
idempotently. A refund entry's source is ``order:<id>:refund:<cumulative refunded>``, so two
sweepers seeing the same refund write it once. Every write first bumps the shop's
``shop_accounts`` row: that row lock (PostgreSQL) or write lock (SQLite) serialises a shop's
ledger transactions, so a payout never races a deduction or another payout past ``available``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.commerce.views import money
from live.core.ids import iso, new_id
from live.core.models import Card, LedgerEntry, Order, Room, ShopAccount
from live.governance.standing import aware


@dataclass
class Totals:
    deposit: int
    balance: int
    frozen: int

    @property
    def available(self) -> int:
        return self.balance - self.frozen


def entry_view(e: LedgerEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": e.kind, "amount": money(e.amount_cents) if e.amount_cents >= 0
                           else "-" + money(-e.amount_cents), "bucket": e.bucket, "at": iso(e.at)}
    if e.order_id:
        out["order_id"] = e.order_id
    if e.violation_id:
        out["violation_id"] = e.violation_id
    return out


async def insert_ignore(s: AsyncSession, model: Any, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on either dialect; True when the row was written."""
    ins = (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)(model)
    res: Any = await s.execute(ins.values(**values).on_conflict_do_nothing())
    return bool(res.rowcount)


class Ledger:
    def __init__(self, db: async_sessionmaker[AsyncSession], window_s: float,
                 clock: Callable[[], datetime]) -> None:
        self._db = db
        self.window = timedelta(seconds=window_s)
        self.clock = clock

    async def lock(self, s: AsyncSession, user_id: str) -> None:
        """Serialise this shop's ledger transactions (the first statement of each is a write)."""
        await insert_ignore(s, ShopAccount, {"user_id": user_id, "version": 0})
        await s.execute(update(ShopAccount).where(ShopAccount.user_id == user_id)
                        .values(version=ShopAccount.version + 1))

    async def add(self, s: AsyncSession, user_id: str, kind: str, bucket: str, amount: int, source: str, *,
                  order_id: str | None = None, violation_id: str | None = None) -> bool:
        return await insert_ignore(s, LedgerEntry, {
            "id": new_id(), "user_id": user_id, "kind": kind, "bucket": bucket, "amount_cents": amount,
            "source": source, "order_id": order_id, "violation_id": violation_id, "at": self.clock()})

    async def totals(self, s: AsyncSession, user_id: str) -> Totals:
        rows = (await s.execute(select(LedgerEntry.bucket, func.sum(LedgerEntry.amount_cents))
                                .where(LedgerEntry.user_id == user_id).group_by(LedgerEntry.bucket))).all()
        sums = {b: int(v or 0) for b, v in rows}
        # Frozen: the net (sale + refunds) of orders whose after-sales window has not passed.
        per_order = (await s.execute(
            select(LedgerEntry.order_id, func.sum(LedgerEntry.amount_cents), Order.completed_at)
            .join(Order, Order.id == LedgerEntry.order_id)
            .where(LedgerEntry.user_id == user_id, LedgerEntry.kind.in_(("sale", "refund")))
            .group_by(LedgerEntry.order_id, Order.completed_at))).all()
        now = self.clock()
        frozen = sum(int(net or 0) for _, net, done in per_order
                     if done is None or aware(done) + self.window > now)
        return Totals(sums.get("deposit", 0), sums.get("balance", 0), frozen)

    async def deduct(self, s: AsyncSession, user_id: str, violation_id: str, cents: int) -> None:
        """A violation's deduction: from the deposit first, the rest from the balance."""
        if cents <= 0:
            return
        await self.lock(s, user_id)
        t = await self.totals(s, user_id)
        from_deposit = min(max(t.deposit, 0), cents)
        if from_deposit:
            await self.add(s, user_id, "deduction", "deposit", -from_deposit, f"violation:{violation_id}:deposit",
                           violation_id=violation_id)
        if cents - from_deposit:
            await self.add(s, user_id, "deduction", "balance", -(cents - from_deposit),
                           f"violation:{violation_id}:balance", violation_id=violation_id)

    async def restore(self, s: AsyncSession, user_id: str, violation_id: str) -> None:
        """An overturned violation gives its deduction back, to the buckets it came from."""
        await self.lock(s, user_id)
        taken = (await s.execute(select(LedgerEntry).where(
            LedgerEntry.violation_id == violation_id, LedgerEntry.kind == "deduction",
            LedgerEntry.amount_cents < 0))).scalars().all()
        for e in taken:
            await self.add(s, user_id, "deduction", e.bucket, -e.amount_cents, f"{e.source}:revoked",
                           violation_id=violation_id)

    # --- orders -> entries ------------------------------------------------------------------
    def _behind(self) -> Any:
        """Orders whose sale or refunds are not (yet) all in the ledger."""
        sold = select(LedgerEntry.order_id).where(LedgerEntry.kind == "sale")
        refunds = (select(LedgerEntry.order_id.label("oid"), func.sum(-LedgerEntry.amount_cents).label("total"))
                   .where(LedgerEntry.kind == "refund").group_by(LedgerEntry.order_id).subquery())
        return (select(Order.id, Room.streamer_id)
                .join(Card, Card.id == Order.card_id).join(Room, Room.id == Card.room_id)
                .outerjoin(refunds, refunds.c.oid == Order.id)
                .where(Order.paid_amount_cents > 0)
                .where(or_(Order.id.not_in(sold),
                           Order.refunded_amount_cents != func.coalesce(refunds.c.total, 0))))

    async def sweep(self, limit: int = 500, since: datetime | None = None) -> int:
        """Write the entries of orders the ledger lags behind (only those whose SQL row changed
        at or after ``since``, when given); the number of orders caught up."""
        q = self._behind()
        if since is not None:
            q = q.where(Order.updated_at >= since)
        async with self._db() as s:
            todo = (await s.execute(q.limit(limit))).all()
        for order_id, shop in todo:
            async with self._db() as s, s.begin():
                await self.lock(s, shop)
                o = await s.get(Order, order_id, populate_existing=True)
                if o is None:
                    continue
                await self.add(s, shop, "sale", "balance", o.paid_amount_cents, f"order:{o.id}", order_id=o.id)
                booked = -int((await s.execute(select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)).where(
                    LedgerEntry.order_id == o.id, LedgerEntry.kind == "refund"))).scalar_one())
                if o.refunded_amount_cents > booked:
                    await self.add(s, shop, "refund", "balance", -(o.refunded_amount_cents - booked),
                                   f"order:{o.id}:refund:{o.refunded_amount_cents}", order_id=o.id)
        return len(todo)

    async def unbalanced(self) -> int:
        """Reconcile: orders whose paid or refunded amount the ledger does not match (0 once swept)."""
        async with self._db() as s:
            return int((await s.execute(select(func.count()).select_from(self._behind().subquery()))).scalar_one())
