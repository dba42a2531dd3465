"""After-sales cases (售后保障): refund only, or return and refund; the streamer answers, the
buyer may escalate a rejection, a moderator rules; deadlines decide for the buyer.

State machine (docs/after-sales.md): ``requested`` → approve → ``refunded`` (refund only) or
``awaiting_return`` (return and refund) → return → ``returned`` → receive → ``refunded``;
``requested`` → reject → ``rejected`` → escalate → ``escalated`` → rule → ``refunded`` or
``closed``; withdraw closes any open case. Deadlines: ``requested`` unanswered for
``after_sales_reply_s`` is approved; ``awaiting_return`` with nothing shipped for
``return_ship_s`` closes; ``returned`` not received for ``return_receive_s`` is refunded; a
``rejected`` case not escalated within ``after_sales_reply_s`` closes.

Every step is one run of ``after_case.lua`` (the case, the order, the stock and the due index
together); who may take it is checked here, from the parties written into the case when it
was opened (they never change, so reading them first is race-free).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select

from live.commerce.fulfilment import Fulfilment
from live.commerce.payments import Payments, payment_secret
from live.commerce.postsale import PostSale, card_of_case, case_view
from live.commerce.views import card_of_order, money, parse_case, parse_order
from live.core.auth import Principal, load_or_create_secret
from live.core.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable, log_loop_error
from live.core.faults import Faults
from live.core.ids import iso, now_ms, utcnow
from live.core.models import AfterSaleCase, AfterSaleStep, Order

if TYPE_CHECKING:
    from live.app.services import Services

log = logging.getLogger(__name__)

CASE_KEYS = ["state", "bought", "orders", "cases", "due", "stream"]
# Which party takes which step.
ROLE = {"approve": "streamer", "reject": "streamer", "receive": "streamer", "return": "buyer",
        "escalate": "buyer", "withdraw": "buyer", "rule_refund": "moderator", "rule_reject": "moderator"}
OPEN_ERRORS = {
    "STATE": "after-sales needs a paid, shipped or completed order",
    "WINDOW": "the after-sales window of this order has closed",
    "KIND": "return and refund needs a shipped order; ask for a refund only",
    "AMOUNT": "amount must be more than 0 and at most what was paid",
}


class AfterSales:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.post = PostSale(svc, svc.flash)
        self.fulfilment = Fulfilment(self.post, svc.orders)
        secret = load_or_create_secret(self.settings.secret, self.settings.data_dir)
        self.payments = Payments(self.post, payment_secret(self.settings.payment_secret, secret))
        self.faults = Faults(self.settings.fault_injection)  # test-only (live.core.faults)

    def _ms(self, seconds: float) -> int:
        return int(seconds * 1000)

    # --- opening and steps ------------------------------------------------------------------
    async def open(self, who: Principal, order_id: str, kind: str, reason: str,
                   amount_cents: int | None) -> dict[str, Any]:
        card_id = card_of_order(order_id)
        s = self.settings
        streamer = await self.post.streamer_of(card_id)
        code, case_raw, order_raw = await self.post.run(
            "after_open", card_id, ["orders", "cases", "due", "stream"],
            [order_id, who.id, kind, reason, "" if amount_cents is None else amount_cents, now_ms(),
             self._ms(s.after_sales_reply_s), self._ms(s.after_sales_window_s), streamer])
        if code == "NOT_FOUND":
            raise NotFound("no such order")
        if code == "FORBIDDEN":
            o = await self.post.order(card_id, order_id)
            if o is None or (who.id != streamer and not who.is_moderator):
                raise NotFound("no such order")
            raise Forbidden("only the buyer opens an after-sales case")
        if code == "OPEN":
            raise Conflict("an after-sales case is already open on this order",
                           after_sale_id=parse_case(case_raw)["id"])
        if code in OPEN_ERRORS:
            err = Invalid if code == "AMOUNT" else Conflict
            raise err(OPEN_ERRORS[code], status=parse_order(order_raw)["s"])
        _, case = await self.post.announce(card_id, order_raw, case_raw)
        assert case is not None
        self.post.count_case(parse_case(case_raw))
        return case

    async def step(self, who: Principal, case_id: str, step: str, note: str = "", carrier: str = "",
                   tracking_no: str = "") -> dict[str, Any]:
        card_id = card_of_case(case_id)
        c = await self.post.case(card_id, case_id)
        if c is None:
            raise NotFound("no such after-sales case")
        role = ROLE[step]
        allowed = {"buyer": who.id == c["u"], "streamer": who.id == c["st"], "moderator": who.is_moderator}[role]
        if not allowed:
            raise Forbidden(f"only the {role} may {step.split('_')[0]} this case")
        return await self._run(card_id, case_id, step, who.id, note, carrier, tracking_no)

    async def _run(self, card_id: str, case_id: str, step: str, by: str, note: str = "", carrier: str = "",
                   tracking_no: str = "") -> dict[str, Any]:
        s = self.settings
        code, case_raw, order_raw, card_status = await self.post.run(
            "after_case", card_id, CASE_KEYS,
            [case_id, step, by, now_ms(), note, carrier, tracking_no, self._ms(s.after_sales_reply_s),
             self._ms(s.return_ship_s), self._ms(s.return_receive_s), self._ms(s.auto_confirm_s)])
        if code == "NOT_FOUND":
            raise NotFound("no such after-sales case")
        if code == "LATE":
            raise Conflict("the time to escalate has passed", status=parse_case(case_raw)["s"])
        if code != "OK":
            raise Conflict(f"the case is {parse_case(case_raw)['s']}", status=parse_case(case_raw)["s"])
        c = parse_case(case_raw)
        _, case = await self.post.announce(card_id, order_raw if c["s"] == "refunded" else "", case_raw,
                                           card_status=card_status)
        assert case is not None
        self.post.count_case(c)
        if c["s"] == "refunded":
            self.post.count_refund("after_sales", int(c["a"]))
        return case

    async def due(self, card_id: str, case_id: str) -> bool:
        """The deadline's step on a case (the sweeper); True if this call took it."""
        try:
            case = await self._run(card_id, case_id, "due", "system")
        except (Conflict, NotFound):
            return False
        except Unavailable:  # the card is fenced for a rebuild: the deadline stays due, next round
            return False
        if self.faults.take("double_deadline"):
            await self._fire_again(case)
        return True

    async def _fire_again(self, case: dict[str, Any]) -> None:
        """Test-only fault: record the deadline just fired a second time, as a double fire would
        show in SQL (a second ``system`` step after it). The case's own steps reach SQL through
        the after-sales stream; this row takes the next step number."""
        last = case["history"][-1]
        async with self.svc.db() as s, s.begin():
            s.add(AfterSaleStep(case_id=case["id"], seq=len(case["history"]), status=last["status"], by="system",
                                at=utcnow(), note="deadline"))
        log.error("fault injection: deadline of case %s fired twice", case["id"])

    # --- reading ----------------------------------------------------------------------------
    async def get(self, who: Principal, case_id: str) -> dict[str, Any]:
        card_id = card_of_case(case_id)
        c = await self.post.case(card_id, case_id)
        if c is not None:
            if who.id not in (c["u"], c["st"]) and not who.is_moderator:
                raise NotFound("no such after-sales case")
            return case_view(c)
        views = await self._sql_cases(AfterSaleCase.id == case_id)
        if not views or (who.id not in (views[0]["user_id"], views[0]["streamer_id"]) and not who.is_moderator):
            raise NotFound("no such after-sales case")
        return views[0]

    async def mine(self, who: Principal) -> list[dict[str, Any]]:
        await self.post.flush()
        return await self._sql_cases(AfterSaleCase.user_id == who.id)

    async def shop_queue(self, who: Principal, status: str | None) -> list[dict[str, Any]]:
        await self.post.flush()
        where = [AfterSaleCase.streamer_id == who.id]
        if status:
            where.append(AfterSaleCase.status == status)
        return await self._sql_cases(*where)

    async def disputes(self, who: Principal) -> list[dict[str, Any]]:
        if not who.is_moderator:
            raise Forbidden("moderators only")
        await self.post.flush()
        return await self._sql_cases(AfterSaleCase.status == "escalated")

    async def _sql_cases(self, *where: ColumnElement[bool], limit: int = 200) -> list[dict[str, Any]]:
        async with self.svc.db() as s:
            rows = list((await s.execute(select(AfterSaleCase).where(*where)
                                         .order_by(AfterSaleCase.created_at.desc()).limit(limit))).scalars())
            ids = [r.id for r in rows]
            steps = list((await s.execute(
                select(AfterSaleStep).where(AfterSaleStep.case_id.in_(ids))
                .order_by(AfterSaleStep.case_id, AfterSaleStep.seq))).scalars()) if ids else []
        history: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for st in steps:
            history[st.case_id].append({"status": st.status, "by": st.by, "at": iso(st.at), "note": st.note})
        return [{
            "id": r.id, "order_id": r.order_id, "user_id": r.user_id, "streamer_id": r.streamer_id, "kind": r.kind,
            "status": r.status, "reason": r.reason, "amount": money(r.amount_cents), "deadline": iso(r.deadline),
            "created_at": iso(r.created_at), "resolved_at": iso(r.resolved_at),
            "return_shipment": ({"carrier": r.return_carrier, "tracking_no": r.return_tracking_no, "shipped_at": None}
                                if r.return_carrier else None),
            "history": history[r.id],
        } for r in rows]

    async def card_stats(self, who: Principal, card_id: str) -> dict[str, Any]:
        """Refund rate and cases of one card (its streamer or a moderator), from SQL."""
        if await self.post.streamer_of(card_id) != who.id and not who.is_moderator:
            raise Forbidden("not your card")
        await self.post.flush()
        async with self.svc.db() as s:
            paid = (await s.execute(select(func.count(), func.coalesce(func.sum(Order.refunded_amount_cents), 0))
                                    .where(Order.card_id == card_id, Order.paid_amount_cents > 0))).one()
            refunded = (await s.execute(select(func.count()).where(
                Order.card_id == card_id, Order.status == "refunded"))).scalar_one()
            rows = (await s.execute(select(AfterSaleCase.status, func.count())
                                    .where(AfterSaleCase.card_id == card_id).group_by(AfterSaleCase.status))).all()
        cases = {str(status): int(n) for status, n in rows}
        orders_paid = int(paid[0])
        return {"card_id": card_id, "orders_paid": orders_paid, "refunded_orders": int(refunded),
                "refund_rate": round(refunded / orders_paid, 4) if orders_paid else 0.0,
                "refunded_amount": money(int(paid[1])), "cases": cases}

    # --- the sweeper ------------------------------------------------------------------------
    async def sweep_once(self) -> int:
        """Take every after-sales step whose time has come; returns how many this call took."""
        n = 0
        now = now_ms()
        # Only cards whose earliest deadline has come (the global next-due index), so a sweep
        # costs nothing for the many cards whose orders wait days for auto-confirm.
        for card_id in await self.post.next_cards(now):
            for member in await self.post.due(card_id, now):
                kind, _, ident = member.partition(":")
                if kind == "o":
                    n += await self.fulfilment.auto_confirm(card_id, ident)
                elif kind == "c":
                    n += await self.due(card_id, ident)
            await self.post.reset_next(card_id)
        return n

    async def sweeper_loop(self, stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set():
            try:
                if rounds % 60 == 0:  # at start-up, then about every minute
                    await self.post.retire_idle()
                rounds += 1
                await self.sweep_once()
                await self.post.clean_dirty()
            except Exception as e:
                log_loop_error(log, "after-sales sweeper failed", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.sweeper_interval_s)

    async def register_once(self, stop: asyncio.Event) -> None:
        try:
            await self.post.register_from_sql()
        except Exception as e:
            log_loop_error(log, "registering after-sales cards from SQL failed", e)


def install(svc: Services) -> None:
    """Build the after-sales service (fulfilment, payments, cases) and its loops."""
    after = AfterSales(svc)
    svc.aftersales = after

    async def persister_ok() -> bool:
        return after.post.persister.healthy

    svc.add_loop("aftersales-persister", after.post.persister.run, "background",
                 health=("aftersales_persister", persister_ok))
    svc.add_loop("aftersales-sweeper", after.sweeper_loop, "background")
    svc.add_loop("aftersales-register", after.register_once, "background")
