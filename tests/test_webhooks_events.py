"""Every contract webhook event, end to end: a real buy, payment, shipment, confirmation,
cancel and after-sales approval reach a real local receiver as signed ``order.*`` /
``aftersale.updated`` events, in order per order id; a sell-out is one ``card.sold_out``; and
running the persisters again over the same stream entries records nothing twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from live.core.models import OutboxEvent
from live.core.streams import Entry
from live.integrations import outbox, signing
from tests import test_webhooks
from tests.aftersales_support import buy, new_sale, paid_order, shipped_case
from tests.support import Api, RunningServer, run_app
from tests.webhook_support import FAST, Receiver, receiver

ORDER_EVENTS = ["order.created", "order.paid", "order.shipped", "order.completed", "order.refunded",
                "aftersale.updated"]
Batches = list[tuple[str, list[Entry]]]
# The webhook tests' server (fast retries, loopback receiver allowed) and subscription helper.
fast = test_webhooks.fast
subscribe = test_webhooks.subscribe


def of_order(rec: Receiver, order_id: str) -> list[str]:
    return [r.type for r in rec.ok() if r.body["data"].get("order_id") == order_id]


async def arrive(rec: Receiver, order_id: str, want: list[str]) -> None:
    await rec.wait(lambda r: len(of_order(r, order_id)) >= len(want), what=f"{want} for {order_id}")
    assert of_order(rec, order_id) == want


async def outbox_count(srv: RunningServer, shop_id: str) -> int:
    """Events of one shop (the database is shared by the session's tests)."""
    async with srv.services.db() as s:
        return int((await s.execute(select(func.count()).select_from(OutboxEvent)
                                    .where(OutboxEvent.shop_id == shop_id))).scalar_one())


def record(persister: Any) -> Batches:
    """Keep every batch ``persister`` applies (to run the same entries through it again later)."""
    seen: Batches = []
    real: Callable[[str, list[Entry]], Awaitable[None]] = persister._apply

    async def apply(stream: str, entries: list[Entry]) -> None:
        await real(stream, entries)
        seen.append((stream, list(entries)))

    persister._apply = apply
    return seen


async def test_pay_ship_confirm_arrive_in_order_signed(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    sale = await new_sale(api)
    async with receiver() as rec:
        hook = await subscribe(api, sale.token, rec.url, ORDER_EVENTS)
        buyer, order = await paid_order(api, sale)
        oid = order["id"]
        await api.ok("POST", f"/api/orders/{oid}/ship", json={"carrier": "SF", "tracking_no": "SF42"},
                     token=sale.token)
        await api.ok("POST", f"/api/orders/{oid}/confirm", token=buyer["token"])
        await arrive(rec, oid, ["order.created", "order.paid", "order.shipped", "order.completed"])
        got = [r for r in rec.ok() if r.body["data"].get("order_id") == oid]
        for r in got:
            assert signing.verify(r.headers["X-Live-Signature"], r.raw, hook["secret"])
            assert r.headers["X-Live-Event"] == r.type
        assert len({r.body["id"] for r in got}) == 4  # four facts, four event ids
        created, paid, shipped, completed = (r.body["data"] for r in got)
        assert created["amount_cents"] == paid["amount_cents"] == 1990 and paid["paid_at"]
        assert (shipped["carrier"], shipped["tracking_no"]) == ("SF", "SF42") and shipped["status"] == "shipped"
        assert completed["status"] == "completed" and completed["completed_at"]


async def test_cancel_refund_and_after_sales_approval(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    sale = await new_sale(api)
    async with receiver() as rec:
        await subscribe(api, sale.token, rec.url, ORDER_EVENTS)
        # A paid order cancelled before shipping: refunded in full at once.
        buyer, order = await paid_order(api, sale)
        await api.ok("POST", f"/api/orders/{order['id']}/cancel", token=buyer["token"])
        await arrive(rec, order["id"], ["order.created", "order.paid", "order.refunded"])
        refund = next(r.body["data"] for r in rec.ok() if r.type == "order.refunded"
                      and r.body["data"]["order_id"] == order["id"])
        assert refund["refund_cents"] == refund["refunded_total_cents"] == 1990 and refund["stock_returned"]
        # A shipped order, an after-sales case, the streamer approves: the case's two steps,
        # then the order's refund, after its own earlier events.
        _, shipped, case = await shipped_case(api, sale)
        await api.ok("POST", f"/api/after-sales/{case['id']}/approve", token=sale.token)
        await arrive(rec, shipped["id"], ["order.created", "order.paid", "order.shipped", "aftersale.updated",
                                          "aftersale.updated", "order.refunded"])
        steps = [r.body["data"] for r in rec.ok() if r.type == "aftersale.updated"]
        assert [(d["case_id"], d["status"], d["step"]) for d in steps] == [
            (case["id"], "requested", 0), (case["id"], "refunded", 1)]
        assert steps[1]["by"] == sale.streamer["user"]["id"] and steps[0]["kind"] == "refund_only"


async def test_deadlines_report_too(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """Steps the sweeper takes (auto-confirm; an unanswered case approved) are reported like
    the ones people take."""
    settings = settings_factory(**FAST, auto_confirm_s=0.5, after_sales_reply_s=0.5, sweeper_interval_s=0.1)
    async with run_app(settings) as srv, Api(srv.url) as api:
        sale = await new_sale(api)
        async with receiver() as rec:
            await subscribe(api, sale.token, rec.url, ORDER_EVENTS)
            _, order = await paid_order(api, sale)
            await api.ok("POST", f"/api/orders/{order['id']}/ship", json={"carrier": "SF", "tracking_no": "A"},
                         token=sale.token)
            await arrive(rec, order["id"], ["order.created", "order.paid", "order.shipped", "order.completed"])
            _, shipped, case = await shipped_case(api, sale)  # the shop never answers: approved
            await arrive(rec, shipped["id"], ["order.created", "order.paid", "order.shipped", "aftersale.updated",
                                              "aftersale.updated", "order.refunded"])
            by = [(r.body["data"]["status"], r.body["data"]["by"]) for r in rec.ok() if r.type == "aftersale.updated"]
            assert [st for st, _ in by] == ["requested", "refunded"] and by[1][1] == "system"


async def test_card_sold_out_once_per_sell_out(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    sale = await new_sale(api, stock=2)
    cid = sale.card["id"]
    async with receiver() as rec:
        await subscribe(api, sale.token, rec.url, ["card.sold_out"])
        first = await api.guest("b1")
        o1 = await buy(api, sale, first)
        await buy(api, sale, await api.guest("b2"))
        await rec.wait(lambda r: len(r.ok()) == 1, what="card.sold_out")
        assert rec.ok()[0].body["data"] | {"title": None} == {"card_id": cid, "room_id": sale.room["id"],
                                                               "stock": 2, "title": None}
        # Back on sale (an unpaid order cancelled) and sold out again: a second sell-out.
        await api.ok("POST", f"/api/orders/{o1['id']}/cancel", token=first["token"])
        status, body = await api.post(f"/api/cards/{cid}/buy", json={"qty": 1, "request_id": "x3"},
                                      token=(await api.guest("b3"))["token"])
        assert status == 200, body
        await rec.wait(lambda r: len(r.ok()) == 2, what="the second card.sold_out")
        await srv.services.orders.flush()
        async with srv.services.db() as s:
            n = (await s.execute(select(func.count()).select_from(OutboxEvent)
                                 .where(OutboxEvent.type == "card.sold_out", OutboxEvent.ordering_key == cid))
                 ).scalar_one()
        assert n == 2 and len({r.body["id"] for r in rec.ok()}) == 2


async def test_persisters_replayed_emit_nothing_twice(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    orders_seen = record(srv.services.orders.persister)
    after_seen = record(srv.services.aftersales.post.persister)
    sale = await new_sale(api, stock=3)
    async with receiver() as rec:
        await subscribe(api, sale.token, rec.url, [*ORDER_EVENTS, "card.sold_out"])
        buyer, order = await paid_order(api, sale)
        await api.ok("POST", f"/api/orders/{order['id']}/ship", json={"carrier": "SF", "tracking_no": "T1"},
                     token=sale.token)
        await api.ok("POST", f"/api/orders/{order['id']}/confirm", token=buyer["token"])
        _, shipped, case = await shipped_case(api, sale)
        await api.ok("POST", f"/api/after-sales/{case['id']}/approve", token=sale.token)
        await buy(api, sale, await api.guest("last"))  # the last unit: sold out
        want = 4 + 6 + 1 + 1  # first order, second order and case, third order created, sold out
        await rec.wait(lambda r: len(r.ok()) == want, what=f"{want} events")
        before = await outbox_count(srv, sale.streamer["user"]["id"])
        assert orders_seen and after_seen
        # The same entries again: forward, backward (older versions after newer ones), one by one.
        for p, seen in ((srv.services.orders.persister, orders_seen), (srv.services.aftersales.post.persister,
                                                                     after_seen)):
            batches = list(seen)
            for stream, entries in [*batches, *reversed(batches)]:
                await p._apply(stream, entries)
            for stream, entries in batches:
                for e in reversed(entries):
                    await p._apply(stream, [e])
        assert await outbox_count(srv, sale.streamer["user"]["id"]) == before
        assert len(rec.ok()) == want and len({r.body["id"] for r in rec.ok()}) == want


def test_a_late_newer_version_still_reports_the_earlier_facts_first() -> None:
    """A writer that sees a completed order SQL never had reports created, paid, shipped and
    completed, in that order; one that then sees an older version reports nothing new."""
    t = datetime(2026, 11, 26, tzinfo=UTC)
    row = {"id": "o1", "card_id": "c1", "room_id": "r1", "user_id": "u1", "qty": 1, "amount_cents": 100,
           "status": "completed", "created_at": t, "paid_at": t, "paid_amount_cents": 100, "carrier": "SF",
           "tracking_no": "T", "shipped_at": t, "completed_at": t, "refunded_amount_cents": 0, "refunded_at": None,
           "stock_returned": False, "after_sale_id": None, "version": 3}
    assert [e[0] for e in outbox.order_changes("shop", None, row)] == [
        "order.created", "order.paid", "order.shipped", "order.completed"]
    shipped = {**row, "status": "shipped", "completed_at": None, "version": 2}
    assert [e[0] for e in outbox.order_changes("shop", shipped, row)] == ["order.completed"]
    refunded = {**row, "status": "refunded", "refunded_amount_cents": 60, "refunded_at": t, "version": 4}
    (ev,) = outbox.order_changes("shop", row, refunded)
    assert ev[0] == "order.refunded" and ev[2]["refund_cents"] == 60 and ev[4] == "order.refunded:o1:60"


def test_one_signature_scheme_for_callbacks_and_webhooks() -> None:
    """The payment callback checks with the webhooks' signing module: what one signs the other
    accepts, and a hostile header (Unicode or huge digits) is refused, never an exception."""
    from live.commerce.payments import sign, verify
    from live.core.errors import Unauthorized

    body = b'{"order_id":"x"}'
    verify("k", signing.header(["k"], body), body)
    assert signing.verify(sign("k", body), body, "k")
    for bad in ("t=\u00b2,v1=00", "t=" + "9" * 5000 + ",v1=00", "v1=00", signing.header(["other"], body)):
        assert signing.problem(bad, body, "k") is not None
        try:
            verify("k", bad, body)
        except Unauthorized:
            pass
        else:
            raise AssertionError(bad)
