"""Races after payment, many concurrent clients at once: each contested transition has exactly
one outcome, the clients are told the truth, and the stock invariant holds after."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from live.core.models import AfterSaleStep, Payment
from tests.aftersales_support import buy, callback, moderator, new_sale, paid_order, shipped_case
from tests.support import Api, RunningServer, run_app

SHIP = {"carrier": "SF", "tracking_no": "SF1"}


async def audit_ok(api: Api, card_id: str, token: str) -> dict[str, Any]:
    audit: dict[str, Any] = await api.ok("POST", f"/api/cards/{card_id}/audit", json={"order_ids": []}, token=token)
    assert audit["invariant_ok"], audit["problems"]
    return audit


async def test_cancel_races_ship_one_outcome_each(api: Api) -> None:
    n = 30
    sale = await new_sale(api, stock=n)
    orders = await asyncio.gather(*(paid_order(api, sale) for _ in range(n)))

    async def later(delay: float, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        await asyncio.sleep(delay)
        return await api.request(method, path, **kw)

    async def race(i: int, buyer: dict[str, Any], order: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
        # A third start together; a third give the cancel, a third the shipment, a head start of
        # a few ms, so that both outcomes occur however loaded the machine is.
        lead = {0: (0.0, 0.0), 1: (0.0, 0.02), 2: (0.02, 0.0)}[i % 3]
        (cs, _), (ss, _) = await asyncio.gather(
            later(lead[0], "POST", f"/api/orders/{order['id']}/cancel", token=buyer["token"]),
            later(lead[1], "POST", f"/api/orders/{order['id']}/ship", json=SHIP, token=sale.token))
        final = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
        return cs, ss, final

    results = await asyncio.gather(*(race(i, b, o) for i, (b, o) in enumerate(orders)))
    shipped = 0
    for cs, ss, final in results:
        assert sorted((cs, ss)) == [200, 409], (cs, ss)  # exactly one wins
        if cs == 200:
            assert final["status"] == "refunded" and final["stock_returned"] and final["shipment"] is None
            assert final["refunded_amount"] == final["amount"]
        else:
            assert final["status"] == "shipped" and not final["stock_returned"] and final["refunded_amount"] == "0.00"
            shipped += 1
    assert 0 < shipped < n, f"the race was not exercised: {shipped} of {n} shipped"
    audit = await audit_ok(api, sale.card["id"], sale.token)
    assert audit["left"] == n - shipped


async def test_payment_races_expiry_one_outcome_each(settings_factory) -> None:  # type: ignore[no-untyped-def]
    n = 40
    settings = settings_factory(payment_timeout_s=1.5, sweeper_interval_s=0.02)
    async with run_app(settings) as srv, Api(srv.url) as api:
        secret = srv.services.aftersales.payments.secret
        sale = await new_sale(api, stock=n)
        buyers = [await api.guest(f"b{i}") for i in range(n)]
        orders = await asyncio.gather(*(buy(api, sale, b) for b in buyers))

        async def pay(i: int, order: dict[str, Any]) -> tuple[int, Any]:
            # Payments spread across the moment each order's window closes.
            pay_by = datetime.fromisoformat(order["pay_by"].replace("Z", "+00:00")).timestamp()
            await asyncio.sleep(max(0.0, pay_by - 0.2 + 0.4 * i / n - time.time()))
            return await callback(api, secret, {"order_id": order["id"], "transaction_id": f"tx-{order['id']}",
                                                "amount": order["amount"], "status": "succeeded"})

        answers = await asyncio.gather(*(pay(i, o) for i, o in enumerate(orders)))
        await asyncio.sleep(0.3)  # the sweeper expires whatever was left unpaid
        paid = 0
        for (st, res), order, buyer in zip(answers, orders, buyers, strict=True):
            assert st == 200, res
            final = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
            if res["outcome"] == "paid":
                assert final["status"] == "paid" and final["paid_amount"] == order["amount"]
                paid += 1
            else:  # the window closed first: refunded at once, no stock taken
                assert res["outcome"] == "refunded"
                assert final["status"] == "refunded" and final["stock_returned"]
                assert final["refunded_amount"] == final["paid_amount"] == order["amount"]
        assert 0 < paid < n, f"the race was not exercised: {paid} of {n} paid"
        audit = await audit_ok(api, sale.card["id"], sale.token)
        assert audit["left"] == n - paid


async def test_duplicate_callbacks_pay_once(server: RunningServer, api: Api) -> None:
    secret = server.services.aftersales.payments.secret
    sale = await new_sale(api, stock=5)
    order = await buy(api, sale, await api.guest("b"))
    body = {"order_id": order["id"], "transaction_id": "dup-tx", "amount": order["amount"], "status": "succeeded"}
    answers = await asyncio.gather(*(callback(api, secret, body) for _ in range(25)))
    assert all(st == 200 for st, _ in answers)
    outcomes = sorted(res["outcome"] for _, res in answers)
    assert outcomes == ["duplicate"] * 24 + ["paid"]
    assert {res["order"]["paid_amount"] for _, res in answers} == {order["amount"]}
    await audit_ok(api, sale.card["id"], sale.token)
    async with server.services.db() as s:
        n = (await s.execute(select(func.count()).select_from(Payment)
                             .where(Payment.order_id == order["id"]))).scalar_one()
    assert n == 1


async def test_two_moderators_rule_at_once(server: RunningServer, api: Api) -> None:
    mods = [{"token": server.settings.admin_token}, await moderator(api, server.settings.admin_token,
                                                                   server.services)]
    sale = await new_sale(api, stock=10)
    cases = []
    for _ in range(8):
        buyer, order, case = await shipped_case(api, sale)
        await api.ok("POST", f"/api/after-sales/{case['id']}/reject", json={"note": "no"}, token=sale.token)
        await api.ok("POST", f"/api/after-sales/{case['id']}/escalate", json={"note": "yes"}, token=buyer["token"])
        cases.append((buyer, order, case))

    async def rule(case: dict[str, Any]) -> list[tuple[int, Any]]:
        return list(await asyncio.gather(*(
            api.post(f"/api/after-sales/{case['id']}/rule", json={"decision": d, "note": d}, token=m["token"])
            for m, d in zip(mods, ("refund", "reject"), strict=True))))

    results = await asyncio.gather(*(rule(c) for _, _, c in cases))
    for (buyer, order, case), answers in zip(cases, results, strict=True):
        codes = [st for st, _ in answers]
        assert sorted(codes) == [200, 409], answers
        winner = "refund" if codes[0] == 200 else "reject"
        final = await api.ok("GET", f"/api/after-sales/{case['id']}", token=buyer["token"])
        assert final["status"] == ("refunded" if winner == "refund" else "closed")
        assert [h["status"] for h in final["history"]].count(final["status"]) == 1
        o = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
        assert o["refunded_amount"] == (order["amount"] if winner == "refund" else "0.00")
    await audit_ok(api, sale.card["id"], sale.token)
    async with server.services.db() as s:
        steps = (await s.execute(select(func.count()).select_from(AfterSaleStep).where(
            AfterSaleStep.case_id.in_([c["id"] for _, _, c in cases])))).scalar_one()
    assert steps == 4 * len(cases)  # requested, rejected, escalated, and one ruling each


async def test_streamer_answer_races_the_reply_deadline(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(after_sales_reply_s=0.4, sweeper_interval_s=0.02)) as srv, \
            Api(srv.url) as api:
        sale = await new_sale(api, stock=20)
        cases = []
        for _ in range(12):
            buyer, order, case = await shipped_case(api, sale, reason="late")
            cases.append((buyer, order, case, time.monotonic()))

        async def reject(i: int, case: dict[str, Any], opened: float) -> int:
            await asyncio.sleep(max(0.0, opened + 0.33 + i * 0.012 - time.monotonic()))
            st, _ = await api.post(f"/api/after-sales/{case['id']}/reject", json={"note": "no"}, token=sale.token)
            return st

        codes = await asyncio.gather(*(reject(i, c, t) for i, (_, _, c, t) in enumerate(cases)))
        await asyncio.sleep(0.5)
        for (buyer, _order, case, _), st in zip(cases, codes, strict=True):
            final = await api.ok("GET", f"/api/after-sales/{case['id']}", token=buyer["token"])
            second = final["history"][1]
            if st == 200:
                assert second["status"] == "rejected" and second["by"] == sale.streamer["user"]["id"]
            else:
                assert st == 409 and second["status"] == "refunded" and second["by"] == "system"
        await audit_ok(api, sale.card["id"], sale.token)
