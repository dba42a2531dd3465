"""Governance: shop admission, violations with points and deductions, appeals, the shop ledger's
endpoints. Every state change is one SQL transaction; each ends by bumping the shop's standing
version so every process sees the change at its next request (see ``standing``)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from live.commerce.views import money
from live.core.auth import Principal
from live.core.errors import Conflict, Forbidden, Invalid, NotFound
from live.core.ids import iso, new_id
from live.core.models import Appeal, LedgerEntry, ShopApplication, ShopViolation, User
from live.governance.ledger import Ledger, entry_view
from live.governance.standing import KINDS, StandingService, tier_of, violation_view
from live.governance.transparency import Transparency


def application_view(a: ShopApplication) -> dict[str, Any]:
    return {"id": a.id, "user_id": a.user_id, "shop_name": a.shop_name, "category": a.category,
            "license_image": f"/media/{a.license_image}.jpg" if a.license_image else None,
            "status": a.status, "note": a.note, "created_at": iso(a.created_at), "decided_at": iso(a.decided_at)}


def appeal_view(a: Appeal) -> dict[str, Any]:
    return {"id": a.id, "violation_id": a.violation_id, "user_id": a.user_id, "text": a.text, "status": a.status,
            "note": a.note, "created_at": iso(a.created_at), "decided_at": iso(a.decided_at)}


P = TypeVar("P", ShopApplication, Appeal)


async def pending(s: AsyncSession, model: type[P], row_id: str, what: str) -> P:
    """The row, locked, if it still waits for a decision (``NOT_FOUND`` / ``CONFLICT`` otherwise)."""
    row = await s.get(model, row_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no such {what}")
    if row.status != "pending":
        raise Conflict(f"the {what} is already {row.status}")
    return row


class Governance:
    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.settings = svc.settings
        self._db = svc.db
        self.standing = StandingService(svc.settings, svc.db, svc.redis)
        self.ledger = Ledger(svc.db, svc.settings.after_sales_window_s, self.now)
        self.transparency = Transparency(svc.db, svc.redis, self.now, self.shop_name)

    def now(self) -> Any:
        return self.standing.clock()

    def set_clock(self, clock: Any) -> None:
        """Tests: run decay and settlement windows on a simulated clock."""
        self.standing.clock = clock

    async def require(self, user_id: str, action: Any) -> None:
        await self.standing.require(user_id, action)

    async def _moderator(self, who: Principal) -> None:
        await self.svc.auth.require_moderator(who)

    # --- standing and violations ------------------------------------------------------------
    async def standing_of(self, who: Principal | None, user_id: str) -> dict[str, Any]:
        user = await self.svc.auth.get_user(user_id)
        if user is None:
            raise NotFound("no such shop")
        st = await self.standing.compute(user_id)
        out = st.public()
        if who is not None and (who.id == user_id or await self.svc.auth.is_moderator(who)):
            now = self.now()
            out["violations"] = [violation_view(v, now) for v in st.violations]
        return out

    async def record(self, who: Principal | None, user_id: str, kind: str, note: str, points: int | None = None,
                     deduction_cents: int | None = None, source: str | None = None) -> dict[str, Any] | None:
        """A violation against a shop, by a moderator (``who``) or by the server (``None``, with
        the ``source`` it found it from: recorded once; ``None`` when it already was)."""
        if who is not None:
            await self._moderator(who)
        if kind not in KINDS:
            raise Invalid(f"kind: one of {', '.join(KINDS)}")
        user = await self.svc.auth.get_user(user_id)
        if user is None:
            raise NotFound("no such user")
        if user.role == "moderator":
            raise Forbidden("moderators are not shops")
        pts = self.settings.violation_points.get(kind, 0) if points is None else points
        cut = self.settings.violation_deduction_cents.get(kind, 0) if deduction_cents is None else deduction_cents
        now = self.now()
        before = await self.standing.compute(user_id)
        _, restrictions = tier_of(self.settings.shop_tiers, before.points + pts)
        v = ShopViolation(id=new_id(), user_id=user_id, kind=kind, points=pts, deduction_cents=cut, note=note,
                          by=who.id if who else "system", restriction=restrictions[-1] if restrictions else "",
                          status="active", created_at=now, expires_at=now + self.standing.decay(), source=source)
        try:
            async with self._db() as s, s.begin():
                s.add(v)
                await s.flush()
                await self.ledger.deduct(s, user_id, v.id, cut)
        except IntegrityError:
            if source is None:
                raise
            return None  # another process recorded this finding first
        await self.standing.changed(user_id)
        await self.transparency.forget(now)
        return violation_view(v, now)

    # --- admission --------------------------------------------------------------------------
    async def apply(self, who: Principal, shop_name: str, category: str, license_image: str | None) -> dict[str, Any]:
        if who.role != "streamer":
            raise Forbidden("only streamers open shops")
        key = None
        if license_image:
            try:
                raw = base64.b64decode(license_image, validate=True)
            except (binascii.Error, ValueError) as e:
                raise Invalid("license_image: a base64-encoded JPEG/PNG/WebP") from e
            processed = await asyncio.to_thread(self.svc.images.process, raw)
            key = f"licence-{new_id()}"
            await self.svc.storage.put(f"{key}.jpg", processed.display)
        async with self._db() as s, s.begin():
            await self.ledger.lock(s, who.id)  # the shop's row lock: two applications at once make one
            open_ = (await s.execute(select(ShopApplication).where(
                ShopApplication.user_id == who.id, ShopApplication.status.in_(("pending", "approved"))))).scalar()
            if open_ is not None:
                raise Conflict(f"you already have an application {open_.status}", id=open_.id)
            a = ShopApplication(id=new_id(), user_id=who.id, shop_name=shop_name, category=category,
                                license_image=key, status="pending", note="", created_at=self.now())
            s.add(a)
        return application_view(a)

    async def my_application(self, who: Principal) -> dict[str, Any]:
        async with self._db() as s:
            a = (await s.execute(select(ShopApplication).where(ShopApplication.user_id == who.id)
                                 .order_by(ShopApplication.created_at.desc(), ShopApplication.id.desc())
                                 .limit(1))).scalar()
        if a is None:
            raise NotFound("no application")
        return application_view(a)

    async def applications(self, who: Principal, status: str | None) -> list[dict[str, Any]]:
        await self._moderator(who)
        q = select(ShopApplication).order_by(ShopApplication.created_at).limit(200)
        if status:
            q = q.where(ShopApplication.status == status)
        async with self._db() as s:
            return [application_view(a) for a in (await s.execute(q)).scalars()]

    async def decide_application(self, who: Principal, app_id: str, decision: str, note: str) -> dict[str, Any]:
        await self._moderator(who)
        async with self._db() as s, s.begin():
            a = await pending(s, ShopApplication, app_id, "application")
            a.status, a.note, a.decided_by, a.decided_at = decision, note, who.id, self.now()
        await self.standing.changed(a.user_id)
        return application_view(a)

    async def shop_name(self, user_id: str) -> str:
        async with self._db() as s:
            a = (await s.execute(select(ShopApplication.shop_name).where(
                ShopApplication.user_id == user_id, ShopApplication.status == "approved").limit(1))).scalar()
            if a:
                return str(a)
            u = await s.get(User, user_id)
        return u.name if u else user_id

    # --- appeals ----------------------------------------------------------------------------
    async def appeal(self, who: Principal, violation_id: str, text: str) -> dict[str, Any]:
        async with self._db() as s, s.begin():
            v = await s.get(ShopViolation, violation_id)
            if v is None or v.user_id != who.id:
                raise NotFound("no such violation")
            if v.status != "active":
                raise Conflict("the violation is no longer active")
            a = Appeal(id=new_id(), violation_id=v.id, user_id=who.id, text=text, status="pending", note="",
                       created_at=self.now())
            s.add(a)
            try:
                await s.flush()
            except IntegrityError as e:
                raise Conflict("this violation has already been appealed") from e
        return appeal_view(a)

    async def appeals(self, who: Principal, status: str | None) -> list[dict[str, Any]]:
        await self._moderator(who)
        q = select(Appeal, ShopViolation).join(ShopViolation, ShopViolation.id == Appeal.violation_id) \
            .order_by(Appeal.created_at).limit(200)
        if status:
            q = q.where(Appeal.status == status)
        now = self.now()
        async with self._db() as s:
            return [{**appeal_view(a), "violation": violation_view(v, now)} for a, v in (await s.execute(q)).all()]

    async def rule_appeal(self, who: Principal, appeal_id: str, decision: str, note: str) -> dict[str, Any]:
        """``uphold`` closes the appeal; ``overturn`` also revokes the violation, its points (so
        its restrictions) and gives its deduction back — all in one transaction."""
        await self._moderator(who)
        now = self.now()
        async with self._db() as s, s.begin():
            a = await pending(s, Appeal, appeal_id, "appeal")
            a.status = "upheld" if decision == "uphold" else "overturned"
            a.note, a.decided_by, a.decided_at = note, who.id, now
            if decision == "overturn":
                v = await s.get(ShopViolation, a.violation_id, with_for_update=True)
                if v is not None:
                    v.status, v.revoked_at = "revoked", now
                    await self.ledger.restore(s, v.user_id, v.id)
        await self.standing.changed(a.user_id)
        if decision == "overturn":
            await self.transparency.forget(now)
        return appeal_view(a)

    # --- ledger -----------------------------------------------------------------------------
    async def ledger_of(self, who: Principal) -> dict[str, Any]:
        async with self._db() as s:
            t = await self.ledger.totals(s, who.id)
            rows = (await s.execute(select(LedgerEntry).where(LedgerEntry.user_id == who.id)
                                    .order_by(LedgerEntry.at.desc(), LedgerEntry.id.desc()).limit(200))).scalars()
            entries = [entry_view(e) for e in rows]
        return {"deposit": money(t.deposit), "balance": _signed(t.balance), "frozen": _signed(t.frozen),
                "available": _signed(t.available), "entries": entries}

    async def deposit(self, who: Principal, cents: int) -> dict[str, Any]:
        if who.role != "streamer":
            raise Forbidden("only shops pay a deposit")
        async with self._db() as s, s.begin():
            await self.ledger.lock(s, who.id)
            await self.ledger.add(s, who.id, "deposit", "deposit", cents, f"deposit:{new_id()}")
        return await self.ledger_of(who)

    async def payout(self, who: Principal, cents: int) -> dict[str, Any]:
        await self.standing.require(who.id, "payout")
        async with self._db() as s, s.begin():
            await self.ledger.lock(s, who.id)
            t = await self.ledger.totals(s, who.id)
            if cents > t.available:
                raise Forbidden(f"at most {_signed(max(t.available, 0))} is available", available=_signed(t.available))
            await self.ledger.add(s, who.id, "payout", "balance", -cents, f"payout:{new_id()}")
        return await self.ledger_of(who)


def _signed(cents: int) -> str:
    return money(cents) if cents >= 0 else "-" + money(-cents)
