"""Orders after payment: shipping, confirmation, cancellation with refund, after-sales cases,
deadlines, who may do what, the payment callback, pushes and SQL — real Redis, real SQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select

from live.core.models import AfterSaleCase, AfterSaleStep, Order, Payment
from tests.aftersales_support import (
    Sale,
    buy,
    callback,
    eventually,
    moderator,
    new_sale,
    paid_order,
    shipped_order,
)
from tests.support import Api, RunningServer, SioClient, run_app

SHIP = {"carrier": "SF Express", "tracking_no": "SF1234567"}


async def card_left(api: Api, sale: Sale) -> int:
    return int((await api.ok("GET", f"/api/cards/{sale.card['id']}"))["left"])


async def invariant_ok(api: Api, sale: Sale) -> dict[str, Any]:
    audit: dict[str, Any] = await api.ok("POST", f"/api/cards/{sale.card['id']}/audit", json={"order_ids": []},
                                         token=sale.token)
    assert audit["invariant_ok"], audit["problems"]
    return audit


async def expect(api: Api, method: str, path: str, status: int, code: str, **kw: Any) -> Any:
    st, body = await api.request(method, path, **kw)
    assert (st, body.get("error", {}).get("code") if isinstance(body, dict) else None) == (status, code), body
    return body


# --- fulfilment -------------------------------------------------------------------------------
async def test_ship_then_confirm_with_forbidden_actors_and_states(api: Api) -> None:
    sale = await new_sale(api)
    buyer, order = await paid_order(api, sale)
    assert order["shipment"] is None and order["refunded_amount"] == "0.00" and order["stock_returned"] is False
    path = f"/api/orders/{order['id']}"
    await expect(api, "POST", f"{path}/ship", 403, "FORBIDDEN", json=SHIP, token=buyer["token"])
    stranger = await api.guest("x")
    await expect(api, "POST", f"{path}/ship", 404, "NOT_FOUND", json=SHIP, token=stranger["token"])
    await expect(api, "POST", f"{path}/ship", 400, "INVALID", json={"carrier": ""}, token=sale.token)
    await expect(api, "POST", f"{path}/confirm", 409, "CONFLICT", token=buyer["token"])  # not shipped yet
    shipped = await api.ok("POST", f"{path}/ship", json=SHIP, token=sale.token)
    assert shipped["status"] == "shipped"
    assert shipped["shipment"]["carrier"] == "SF Express" and shipped["shipment"]["tracking_no"] == "SF1234567"
    await expect(api, "POST", f"{path}/ship", 409, "CONFLICT", json=SHIP, token=sale.token)
    await expect(api, "POST", f"{path}/cancel", 409, "CONFLICT", token=buyer["token"])
    await expect(api, "POST", f"{path}/confirm", 403, "FORBIDDEN", token=sale.token)
    done = await api.ok("POST", f"{path}/confirm", token=buyer["token"])
    assert done["status"] == "completed" and done["completed_at"]
    await expect(api, "POST", f"{path}/confirm", 409, "CONFLICT", token=buyer["token"])
    # An unpaid order cannot ship.
    pending = await buy(api, sale, await api.guest("p"))
    await expect(api, "POST", f"/api/orders/{pending['id']}/ship", 409, "CONFLICT", json=SHIP, token=sale.token)
    assert (await invariant_ok(api, sale))["sold"] == 2


async def test_shipped_order_completes_by_itself(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(auto_confirm_s=0.5, sweeper_interval_s=0.1)) as srv, Api(srv.url) as api:
        sale = await new_sale(api)
        buyer, order = await shipped_order(api, sale)

        async def completed() -> bool:
            o = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
            return bool(o["status"] == "completed")

        await eventually(completed, timeout=10)


async def test_cancel_unpaid_and_paid_returns_units_and_limit(server: RunningServer, api: Api) -> None:
    sale = await new_sale(api, stock=2, limit=1)
    buyer, order = await paid_order(api, sale)
    other = await buy(api, sale, await api.guest("o"))
    assert await card_left(api, sale) == 0
    refunded = await api.ok("POST", f"/api/orders/{order['id']}/cancel", token=buyer["token"])
    assert refunded["status"] == "refunded" and refunded["refunded_amount"] == order["amount"]
    assert refunded["stock_returned"] is True and refunded["paid_amount"] == order["amount"]
    assert await card_left(api, sale) == 1
    await expect(api, "POST", f"/api/orders/{order['id']}/cancel", 409, "CONFLICT", token=buyer["token"])
    # The unit went back to the buyer's limit too: the same buyer may buy again.
    again = await buy(api, sale, buyer)
    assert again["status"] == "pending_payment"
    cancelled = await api.ok("POST", f"/api/orders/{other['id']}/cancel", token=await _owner_token(server, other))
    assert cancelled["status"] == "cancelled" and cancelled["stock_returned"] is True
    assert await card_left(api, sale) == 1
    mine = await api.ok("GET", "/api/me/orders", token=buyer["token"])
    assert {o["id"]: o["status"] for o in mine}[order["id"]] == "refunded"
    await invariant_ok(api, sale)


async def test_callback_signature_replay_idempotency_and_late_payment(server: RunningServer, api: Api) -> None:
    secret = server.services.aftersales.payments.secret
    sale = await new_sale(api, stock=3)
    buyer = await api.guest("b")
    order = await buy(api, sale, buyer)
    body = {"order_id": order["id"], "transaction_id": "tx-1", "amount": order["amount"], "status": "succeeded"}
    st, res = await callback(api, "wrong-secret", body)
    assert st == 401 and res["error"]["code"] == "UNAUTHORIZED"
    st, res = await callback(api, secret, body, t=int(time.time()) - 301)
    assert st == 401 and res["error"]["code"] == "UNAUTHORIZED"
    st, res = await callback(api, secret, body, signature="garbage")
    assert st == 401
    st, res = await callback(api, secret, {**body, "amount": "1.00"})
    assert st == 400 and res["error"]["code"] == "INVALID"
    assert (await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"]))["status"] == "pending_payment"
    st, res = await callback(api, secret, body)
    assert st == 200 and res["outcome"] == "paid" and res["order"]["status"] == "paid"
    st, res = await callback(api, secret, body)  # the provider retries: same answer, nothing more
    assert st == 200 and res["outcome"] == "duplicate" and res["order"]["paid_amount"] == order["amount"]
    st, res = await callback(api, secret, {**body, "order_id": (await buy(api, sale, await api.guest("c")))["id"]})
    assert st == 409  # one transaction cannot pay two orders
    # A second, different charge of the paid order is refunded at once.
    st, res = await callback(api, secret, {**body, "transaction_id": "tx-2"})
    assert st == 200 and res["outcome"] == "refunded" and res["order"]["status"] == "paid"
    assert res["order"]["refunded_amount"] == order["amount"]
    # A payment for a cancelled order: refunded at once, no stock taken.
    late = await buy(api, sale, await api.guest("d"))
    left = await card_left(api, sale)
    st, res = await api.post(f"/api/orders/{late['id']}/cancel", token=None)
    assert st == 401
    await api.ok("POST", f"/api/orders/{late['id']}/cancel",
                 token=await _owner_token(server, late))
    assert await card_left(api, sale) == left + 1
    st, res = await callback(api, secret, {**body, "order_id": late["id"], "transaction_id": "tx-3"})
    assert st == 200 and res["outcome"] == "refunded"
    assert res["order"]["status"] == "refunded" and res["order"]["stock_returned"] is True
    assert res["order"]["refunded_amount"] == late["amount"]
    assert await card_left(api, sale) == left + 1
    await invariant_ok(api, sale)
    async with server.services.db() as s:
        pays = {p.transaction_id: p.outcome for p in (await s.execute(select(Payment))).scalars()}
    assert pays["tx-1"] == "paid" and pays["tx-2"] == "refunded" and pays["tx-3"] == "refunded"


async def _owner_token(server: RunningServer, order: dict[str, Any]) -> str:
    from live.core.auth import Principal

    return str(server.services.auth.issue(Principal(order["user_id"], "b", "viewer")))


async def test_payment_after_expiry_is_refunded_and_takes_no_stock(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(payment_timeout_s=0.3, sweeper_interval_s=5)) as srv, Api(srv.url) as api:
        secret = srv.services.aftersales.payments.secret
        sale = await new_sale(api, stock=1)
        order = await buy(api, sale, await api.guest("b"))
        assert await card_left(api, sale) == 0
        await asyncio.sleep(0.4)  # past pay_by, before any sweep: the callback itself must notice
        st, res = await callback(api, secret, {"order_id": order["id"], "transaction_id": "late-1",
                                               "amount": order["amount"], "status": "succeeded"})
        assert st == 200 and res["outcome"] == "refunded" and res["order"]["status"] == "refunded"
        assert await card_left(api, sale) == 1
        await invariant_ok(api, sale)


# --- after-sales cases ----------------------------------------------------------------------------
async def test_refund_only_approved_before_shipping_returns_units(server: RunningServer, api: Api) -> None:
    sale = await new_sale(api, stock=1)
    buyer, order = await paid_order(api, sale)
    b, s = SioClient(), SioClient()
    await b.connect(server.url, buyer["token"])
    await s.connect(server.url, sale.token)
    try:
        path = f"/api/orders/{order['id']}/after-sales"
        await expect(api, "POST", path, 400, "INVALID", json={"kind": "refund_only", "reason": "x", "amount": "99.99"},
                     token=buyer["token"])
        await expect(api, "POST", path, 400, "INVALID", json={"kind": "swap", "reason": "x"}, token=buyer["token"])
        await expect(api, "POST", path, 409, "CONFLICT", json={"kind": "return_refund", "reason": "x"},
                     token=buyer["token"])  # nothing shipped: nothing to return
        await expect(api, "POST", path, 403, "FORBIDDEN", json={"kind": "refund_only", "reason": "x"},
                     token=sale.token)
        case = await api.ok("POST", path, json={"kind": "refund_only", "reason": "changed my mind"},
                            token=buyer["token"])
        assert case["status"] == "requested" and case["amount"] == order["amount"] and case["deadline"]
        assert case["history"][0]["status"] == "requested" and case["history"][0]["by"] == buyer["user"]["id"]
        await expect(api, "POST", path, 409, "CONFLICT", json={"kind": "refund_only", "reason": "again"},
                      token=buyer["token"])
        # No shipping (nor cancelling) while the case decides.
        await expect(api, "POST", f"/api/orders/{order['id']}/ship", 409, "CONFLICT", json=SHIP, token=sale.token)
        await expect(api, "POST", f"/api/orders/{order['id']}/cancel", 409, "CONFLICT", token=buyer["token"])
        cpath = f"/api/after-sales/{case['id']}"
        await expect(api, "POST", f"{cpath}/approve", 403, "FORBIDDEN", token=buyer["token"])
        await expect(api, "POST", f"{cpath}/rule", 403, "FORBIDDEN", json={"decision": "refund"}, token=sale.token)
        await expect(api, "POST", f"{cpath}/escalate", 409, "CONFLICT", token=buyer["token"])
        done = await api.ok("POST", f"{cpath}/approve", token=sale.token)
        assert done["status"] == "refunded" and [h["status"] for h in done["history"]] == ["requested", "refunded"]
        await expect(api, "POST", f"{cpath}/approve", 409, "CONFLICT", token=sale.token)
        await expect(api, "POST", f"{cpath}/withdraw", 409, "CONFLICT", token=buyer["token"])
        o = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
        assert o["status"] == "refunded" and o["refunded_amount"] == order["amount"] and o["stock_returned"]
        assert o["after_sale_id"] == case["id"]
        assert await card_left(api, sale) == 1
        for client in (b, s):
            await client.wait_for("aftersale:update", where=lambda d: d["status"] == "refunded")
            await client.wait_for("order:update", where=lambda d: d["status"] == "refunded")
        assert (await api.ok("GET", cpath, token=sale.token))["status"] == "refunded"
        await expect(api, "GET", cpath, 404, "NOT_FOUND", token=(await api.guest("z"))["token"])
    finally:
        await b.close()
        await s.close()
    await invariant_ok(api, sale)


async def test_return_refund_after_shipping_keeps_units_and_sql_has_history(server: RunningServer,
                                                                           api: Api) -> None:
    sale = await new_sale(api, stock=2)
    buyer, order = await shipped_order(api, sale)
    left = await card_left(api, sale)
    case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales",
                        json={"kind": "return_refund", "reason": "broken", "amount": "10.5"}, token=buyer["token"])
    assert case["amount"] == "10.50"
    cpath = f"/api/after-sales/{case['id']}"
    # The clock of auto-confirm waits while a case is open; confirming by hand is the buyer's choice.
    c = await api.ok("POST", f"{cpath}/approve", json={"note": "send it back"}, token=sale.token)
    assert c["status"] == "awaiting_return"
    await expect(api, "POST", f"{cpath}/receive", 409, "CONFLICT", token=sale.token)
    await expect(api, "POST", f"{cpath}/return", 403, "FORBIDDEN", json=SHIP, token=sale.token)
    c = await api.ok("POST", f"{cpath}/return", json={"carrier": "YTO", "tracking_no": "YT9"}, token=buyer["token"])
    assert c["status"] == "returned" and c["return_shipment"]["tracking_no"] == "YT9"
    await expect(api, "POST", f"{cpath}/receive", 403, "FORBIDDEN", token=buyer["token"])
    c = await api.ok("POST", f"{cpath}/receive", token=sale.token)
    assert c["status"] == "refunded"
    assert [h["status"] for h in c["history"]] == ["requested", "awaiting_return", "returned", "refunded"]
    o = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
    assert o["status"] == "refunded" and o["refunded_amount"] == "10.50" and o["stock_returned"] is False
    assert await card_left(api, sale) == left  # shipped units do not come back
    mine = await api.ok("GET", "/api/me/after-sales", token=buyer["token"])
    assert [(x["id"], x["status"], len(x["history"])) for x in mine] == [(case["id"], "refunded", 4)]
    queue = await api.ok("GET", "/api/shop/after-sales?status=refunded", token=sale.token)
    assert [x["id"] for x in queue] == [case["id"]]
    await expect(api, "GET", "/api/shop/after-sales?status=nope", 400, "INVALID", token=sale.token)
    await invariant_ok(api, sale)
    async with server.services.db() as s:
        row = await s.get(Order, order["id"])
        assert row is not None and row.status == "refunded" and row.refunded_amount_cents == 1050
        assert row.paid_amount_cents == 1990 and row.carrier == "SF" and not row.stock_returned
        crow = await s.get(AfterSaleCase, case["id"])
        assert crow is not None and crow.status == "refunded" and crow.resolved_at is not None
        steps = list((await s.execute(select(AfterSaleStep.status).where(AfterSaleStep.case_id == case["id"])
                                      .order_by(AfterSaleStep.seq))).scalars())
        assert steps == ["requested", "awaiting_return", "returned", "refunded"]


async def test_reject_escalate_and_moderator_rules(server: RunningServer, api: Api) -> None:
    sale = await new_sale(api, stock=3)
    admin = server.settings.admin_token
    for decision, final in (("refund", "refunded"), ("reject", "closed")):
        buyer, order = await shipped_order(api, sale)
        case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales",
                            json={"kind": "refund_only", "reason": "not as described"}, token=buyer["token"])
        cpath = f"/api/after-sales/{case['id']}"
        await expect(api, "POST", f"{cpath}/reject", 403, "FORBIDDEN", json={"note": "no"}, token=buyer["token"])
        c = await api.ok("POST", f"{cpath}/reject", json={"note": "it is as described"}, token=sale.token)
        assert c["status"] == "rejected" and c["history"][-1]["note"] == "it is as described"
        await expect(api, "POST", f"{cpath}/rule", 409, "CONFLICT", json={"decision": decision}, token=admin)
        await expect(api, "POST", f"{cpath}/escalate", 403, "FORBIDDEN", json={"note": "x"}, token=sale.token)
        c = await api.ok("POST", f"{cpath}/escalate", json={"note": "please look"}, token=buyer["token"])
        assert c["status"] == "escalated"
        disputes = await api.ok("GET", "/api/moderation/disputes", token=admin)
        assert case["id"] in [d["id"] for d in disputes]
        assert [h["status"] for h in next(d for d in disputes if d["id"] == case["id"])["history"]] == [
            "requested", "rejected", "escalated"]
        await expect(api, "GET", "/api/moderation/disputes", 403, "FORBIDDEN", token=sale.token)
        await expect(api, "POST", f"{cpath}/rule", 403, "FORBIDDEN", json={"decision": decision},
                     token=buyer["token"])
        await expect(api, "POST", f"{cpath}/rule", 400, "INVALID", json={"decision": "maybe"}, token=admin)
        c = await api.ok("POST", f"{cpath}/rule", json={"decision": decision, "note": "ruled"}, token=admin)
        assert c["status"] == final
        o = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
        assert o["status"] == ("refunded" if final == "refunded" else "shipped")
    await invariant_ok(api, sale)


async def test_withdraw_then_a_new_case_and_the_window(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(after_sales_window_s=0.5)) as srv, Api(srv.url) as api:
        sale = await new_sale(api)
        buyer, order = await shipped_order(api, sale)
        path = f"/api/orders/{order['id']}/after-sales"
        case = await api.ok("POST", path, json={"kind": "refund_only", "reason": "a"}, token=buyer["token"])
        await expect(api, "POST", f"/api/after-sales/{case['id']}/withdraw", 403, "FORBIDDEN", token=sale.token)
        c = await api.ok("POST", f"/api/after-sales/{case['id']}/withdraw", token=buyer["token"])
        assert c["status"] == "closed"
        second = await api.ok("POST", path, json={"kind": "refund_only", "reason": "b"}, token=buyer["token"])
        assert second["id"] != case["id"]
        await api.ok("POST", f"/api/after-sales/{second['id']}/withdraw", token=buyer["token"])
        await api.ok("POST", f"/api/orders/{order['id']}/confirm", token=buyer["token"])
        third = await api.ok("POST", path, json={"kind": "refund_only", "reason": "c"}, token=buyer["token"])
        await api.ok("POST", f"/api/after-sales/{third['id']}/withdraw", token=buyer["token"])
        await asyncio.sleep(0.6)
        await expect(api, "POST", path, 409, "CONFLICT", json={"kind": "refund_only", "reason": "d"},
                     token=buyer["token"])


# --- deadlines --------------------------------------------------------------------------------------
DEADLINES = {"after_sales_reply_s": 0.5, "return_ship_s": 0.5, "return_receive_s": 0.5, "sweeper_interval_s": 0.1}


async def _case_status(api: Api, token: str, case_id: str, status: str) -> dict[str, Any] | None:
    c: dict[str, Any] = await api.ok("GET", f"/api/after-sales/{case_id}", token=token)
    return c if c["status"] == status else None


@pytest.mark.parametrize("kind,steps,final,by_system", [
    ("refund_only", [], "refunded", ["refunded"]),  # the shop never answered: approved
    ("return_refund", [], "closed", ["awaiting_return", "closed"]),  # approved, the buyer never shipped
    ("return_refund", ["approve", "return"], "refunded", ["refunded"]),  # returned, never received
    ("refund_only", ["reject"], "closed", ["closed"]),  # rejected and never escalated
])
async def test_deadlines_fire_for_the_buyer(settings_factory, kind: str, steps: list[str], final: str,  # type: ignore[no-untyped-def]
                                            by_system: list[str]) -> None:
    async with run_app(settings_factory(**DEADLINES)) as srv, Api(srv.url) as api:
        sale = await new_sale(api)
        buyer, order = await shipped_order(api, sale)
        case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales",
                            json={"kind": kind, "reason": "late"}, token=buyer["token"])
        for step in steps:
            token = buyer["token"] if step == "return" else sale.token
            await api.ok("POST", f"/api/after-sales/{case['id']}/{step}", json=SHIP if step == "return" else {},
                         token=token)

        async def ended() -> dict[str, Any] | None:
            return await _case_status(api, buyer["token"], case["id"], final)

        c = await eventually(ended, timeout=15)
        system = [h["status"] for h in c["history"] if h["by"] == "system"]
        assert system == by_system
        o = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
        assert o["status"] == ("refunded" if final == "refunded" else "shipped")
        if steps == ["reject"]:
            await expect(api, "POST", f"/api/after-sales/{case['id']}/escalate", 409, "CONFLICT",
                         token=buyer["token"])
        await invariant_ok(api, sale)


async def test_two_moderators_fixture_promotes(server: RunningServer, api: Api) -> None:
    mod = await moderator(api, server.settings.admin_token, server.services)
    assert mod["user"]["role"] == "moderator"
    assert isinstance(await api.ok("GET", "/api/moderation/disputes", token=mod["token"]), list)


async def test_after_sales_state_rebuilt_after_redis_data_loss(server: RunningServer, api: Api) -> None:
    from live.core import keys

    sale = await new_sale(api, stock=3)
    buyer, order = await shipped_order(api, sale)
    case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales",
                        json={"kind": "return_refund", "reason": "torn"}, token=buyer["token"])
    await api.ok("POST", f"/api/after-sales/{case['id']}/approve", token=sale.token)
    payer, paid = await paid_order(api, sale)
    await server.services.orders.flush()
    card_id = sale.card["id"]
    # The card's slot is lost at once, as a Redis restored from an old snapshot loses it. One DEL:
    # key by key, the fence check could rebuild between two deletes (seen in CI) and the rest of the
    # loop then delete the rebuilt cases behind a card state that no longer looks lost.
    await server.services.redis.delete(*(k(card_id) for k in (
        keys.card_state, keys.card_bought, keys.card_requests, keys.card_orders, keys.card_deadlines,
        keys.card_cases, keys.card_after_due, keys.card_txns)))
    assert await server.services.orders.rebuild(card_id)
    c = await api.ok("GET", f"/api/after-sales/{case['id']}", token=buyer["token"])
    assert c["status"] == "awaiting_return" and [h["status"] for h in c["history"]] == ["requested",
                                                                                         "awaiting_return"]
    assert await server.services.redis.zscore(keys.card_after_due(card_id), f"c:{case['id']}")
    c = await api.ok("POST", f"/api/after-sales/{case['id']}/return", json=SHIP, token=buyer["token"])
    assert c["status"] == "returned"
    # A replayed payment is still recognised after the loss: not charged twice.
    again = await api.ok("POST", f"/api/orders/{paid['id']}/pay", token=payer["token"])
    assert again["status"] == "paid" and again["paid_amount"] == again["amount"] == paid["amount"]
    o = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
    assert o["status"] == "shipped" and o["after_sale_id"] == case["id"]
    await invariant_ok(api, sale)


async def test_ship_all_paid_orders_of_a_card_and_its_refund_rate(api: Api) -> None:
    sale = await new_sale(api, stock=6)
    paid = [await paid_order(api, sale) for _ in range(3)]
    await buy(api, sale, await api.guest("unpaid"))
    buyer, under_case = paid[0]
    await api.ok("POST", f"/api/orders/{under_case['id']}/after-sales", json={"kind": "refund_only", "reason": "r"},
                 token=buyer["token"])
    await expect(api, "POST", f"/api/cards/{sale.card['id']}/ship-all", 403, "FORBIDDEN", json={"carrier": "SF"},
                 token=buyer["token"])
    res = await api.ok("POST", f"/api/cards/{sale.card['id']}/ship-all",
                       json={"carrier": "SF", "tracking_prefix": "SF-"}, token=sale.token)
    assert sorted(res["shipped"]) == sorted(o["id"] for _, o in paid[1:]) and res["skipped"] == [under_case["id"]]
    shipped = await api.ok("GET", f"/api/cards/{sale.card['id']}/orders?status=shipped", token=sale.token)
    assert {o["id"] for o in shipped} == set(res["shipped"])
    assert all(o["shipment"]["tracking_no"].startswith("SF-") for o in shipped)
    await expect(api, "GET", f"/api/cards/{sale.card['id']}/orders", 403, "FORBIDDEN", token=buyer["token"])
    case_id = (await api.ok("GET", f"/api/orders/{under_case['id']}", token=buyer["token"]))["after_sale_id"]
    await api.ok("POST", f"/api/after-sales/{case_id}/approve", token=sale.token)
    stats = await api.ok("GET", f"/api/cards/{sale.card['id']}/after-sales-stats", token=sale.token)
    assert stats["orders_paid"] == 3 and stats["refunded_orders"] == 1 and stats["refund_rate"] == 0.3333
    assert stats["refunded_amount"] == "19.90" and stats["cases"] == {"refunded": 1}
    await invariant_ok(api, sale)


async def test_global_next_due_index_follows_the_earliest_deadline(server: RunningServer, api: Api) -> None:
    from live.core import keys

    redis, post = server.services.redis, server.services.aftersales.post
    s = server.settings
    sale = await new_sale(api)
    card_id = sale.card["id"]
    buyer, order = await shipped_order(api, sale)
    shipped_ms = await redis.zscore(keys.card_after_due(card_id), f"o:{order['id']}")
    assert await redis.zscore(keys.AFTER_NEXT, card_id) == shipped_ms
    case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales", json={"kind": "refund_only", "reason": "x"},
                        token=buyer["token"])
    case_due = await redis.zscore(keys.card_after_due(card_id), f"c:{case['id']}")
    assert case_due < shipped_ms and await redis.zscore(keys.AFTER_NEXT, card_id) == case_due
    assert abs(case_due - shipped_ms + (s.auto_confirm_s - s.after_sales_reply_s) * 1000) < 5000
    # A crash lost the card's global entry: the full pass puts it back; after a sweep of the card
    # its entry is its next deadline again (the case ended: auto-confirm).
    await redis.zrem(keys.AFTER_NEXT, card_id)
    await post.retire_idle()
    assert await redis.zscore(keys.AFTER_NEXT, card_id) == case_due
    await api.ok("POST", f"/api/after-sales/{case['id']}/withdraw", token=buyer["token"])
    await post.reset_next(card_id)
    assert await redis.zscore(keys.AFTER_NEXT, card_id) == await redis.zscore(keys.card_after_due(card_id),
                                                                             f"o:{order['id']}")
    await api.ok("POST", f"/api/orders/{order['id']}/confirm", token=buyer["token"])
    await post.reset_next(card_id)
    assert await redis.zscore(keys.AFTER_NEXT, card_id) is None
