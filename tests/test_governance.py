"""Governance: admission, violation points and tiers enforced on every process, decay on a
simulated clock, appeals, the shop ledger — real Redis, real SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from live.core.models import LedgerEntry
from live.governance import findings
from tests.aftersales_support import eventually, paid_order
from tests.flash_support import list_card
from tests.support import Api, RunningServer, run_app

ADMIN = "test-admin-token"


class Clock:
    """A simulated clock shared by the processes of a test."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


async def code_of(api: Api, method: str, path: str, **kw: Any) -> tuple[int, str | None, Any]:
    st, body = await api.request(method, path, **kw)
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return st, err.get("code"), err


async def violate(api: Api, user_id: str, kind: str = "other", **kw: Any) -> dict[str, Any]:
    return dict(await api.ok("POST", "/api/moderation/violations",
                             json={"user_id": user_id, "kind": kind, "note": "n", **kw}, token=ADMIN))


@pytest.fixture
async def two(settings_factory: Any) -> AsyncIterator[tuple[RunningServer, RunningServer, Clock]]:
    """Two processes on one Redis and one database, on one simulated clock."""
    clock = Clock()
    async with run_app(settings_factory()) as a, run_app(settings_factory()) as b:
        for srv in (a, b):
            srv.services.governance.set_clock(clock)
        yield a, b, clock


async def test_tiers_restrict_every_process_and_decay(two: tuple[RunningServer, RunningServer, Clock]) -> None:
    a, b, clock = two
    async with Api(a.url) as api_a, Api(b.url) as api_b:
        s = await api_a.streamer()
        tok, uid = s["token"], s["user"]["id"]
        room = await api_a.live_room(tok)
        later = await api_a.ok("POST", "/api/rooms", json={"title": "later"}, token=tok)
        soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        # Warm process b's cache of the shop's standing: a change on a must still reach it.
        await list_card(api_b, tok, room["id"])
        await list_card(api_b, tok, room["id"], starts_at=soon)

        await violate(api_a, uid, points=12)  # tier 12: no scheduled sales
        st, body = await api_b.request("POST", f"/api/rooms/{room['id']}/cards", token=tok,
                                       data=_form(starts_at=soon))
        assert (st, body["error"]["code"], body["error"]["restriction"]) == (403, "FORBIDDEN", "no_scheduled_sales")
        await list_card(api_b, tok, room["id"])  # selling now is still allowed

        await violate(api_a, uid, points=12)  # 24: no listing
        st, body = await api_b.request("POST", f"/api/rooms/{room['id']}/cards", token=tok, data=_form())
        assert (st, body["error"]["restriction"]) == (403, "no_listing")
        await api_b.ok("POST", "/api/shop/deposit", json={"amount": "10.00"}, token=tok)

        await violate(api_a, uid, points=12)  # 36: no going live
        _, _, err = await code_of(api_b, "POST", f"/api/rooms/{later['id']}/live", token=tok)
        assert err["restriction"] == "no_live"

        await violate(api_a, uid, points=12, deduction="0")  # 48: shop closed, payouts frozen
        _, code, err = await code_of(api_b, "POST", "/api/shop/payouts", json={"amount": "0.01"}, token=tok)
        assert (code, err["restriction"]) == ("FORBIDDEN", "shop_closed")

        public = await api_b.ok("GET", f"/api/shops/{uid}/standing")
        assert public == {"points": 48, "tier": 48,
                          "restrictions": ["no_scheduled_sales", "no_listing", "no_live", "shop_closed"]}
        own = await api_b.ok("GET", f"/api/shops/{uid}/standing", token=tok)
        assert [v["status"] for v in own["violations"]] == ["active"] * 4

        # Decay: a year (the default) later on the simulated clock, every process lets it all through.
        clock.advance(a.settings.violation_decay_s + 1)
        await list_card(api_b, tok, room["id"], starts_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
        await api_b.ok("POST", f"/api/rooms/{later['id']}/live", token=tok)
        own = await api_a.ok("GET", f"/api/shops/{uid}/standing", token=tok)
        assert (own["points"], own["restrictions"]) == (0, [])
        assert {v["status"] for v in own["violations"]} == {"expired"}


def _form(**fields: Any) -> Any:
    import aiohttp

    from tests.flash_support import photo

    form = aiohttp.FormData()
    form.add_field("price", "9.90")
    form.add_field("stock", "5")
    for k, v in fields.items():
        form.add_field(k, str(v))
    form.add_field("image", photo(), filename="p.png", content_type="image/png")
    return form


async def test_violation_input_and_rights(api: Api) -> None:
    s = await api.streamer()
    uid = s["user"]["id"]
    viewer = await api.guest()
    for bad in ({"user_id": uid, "kind": "nope"}, {"user_id": uid, "kind": "other", "points": -1},
                {"user_id": uid, "kind": "other", "points": "3"}, {"user_id": uid, "kind": "other", "deduction": "x"},
                {"kind": "other"}):
        assert (await code_of(api, "POST", "/api/moderation/violations", json=bad, token=ADMIN))[:2] == (400, "INVALID")
    assert (await code_of(api, "POST", "/api/moderation/violations", json={"user_id": uid, "kind": "other"},
                          token=s["token"]))[:2] == (403, "FORBIDDEN")
    assert (await code_of(api, "POST", "/api/moderation/violations", json={"user_id": "nobody", "kind": "other"},
                          token=ADMIN))[:2] == (404, "NOT_FOUND")
    v = await violate(api, uid, "counterfeit")
    assert (v["kind"], v["points"], v["status"]) == ("counterfeit", 24, "active")  # the setting's points
    # A stranger sees the public standing only.
    seen = await api.ok("GET", f"/api/shops/{uid}/standing", token=viewer["token"])
    assert "violations" not in seen and seen["points"] == 24
    mod = await api.ok("GET", f"/api/shops/{uid}/standing", token=ADMIN)
    assert [x["id"] for x in mod["violations"]] == [v["id"]]


async def test_listing_refused_until_application_approved(settings_factory: Any) -> None:
    async with run_app(settings_factory(shop_admission="review")) as srv, Api(srv.url) as api:
        s = await api.streamer()
        tok = s["token"]
        room = await api.live_room(tok)
        st, body = await api.request("POST", f"/api/rooms/{room['id']}/cards", token=tok, data=_form())
        assert (st, body["error"]["code"], body["error"]["restriction"]) == (403, "FORBIDDEN", "admission")
        assert (await code_of(api, "GET", "/api/shop/application", token=tok))[1] == "NOT_FOUND"
        assert (await code_of(api, "POST", "/api/shop/application", json={"shop_name": ""}, token=tok))[1] == "INVALID"
        viewer = await api.guest()
        assert (await code_of(api, "POST", "/api/shop/application", json={"shop_name": "x", "category": "y"},
                              token=viewer["token"]))[1] == "FORBIDDEN"
        tries = await asyncio.gather(*(api.request("POST", "/api/shop/application",
                                                   json={"shop_name": "Tea House", "category": "tea"}, token=tok)
                                       for _ in range(3)))
        assert sorted(st for st, _ in tries) == [201, 409, 409], tries  # applied at once: one application
        app = next(body for st, body in tries if st == 201)
        assert app["status"] == "pending"
        assert (await code_of(api, "POST", "/api/shop/application", json={"shop_name": "x", "category": "y"},
                              token=tok))[1] == "CONFLICT"
        queue = await api.ok("GET", "/api/moderation/applications?status=pending", token=ADMIN)
        # The queue is shared with other tests' shops (one database per test session): this
        # shop has exactly its one application in it.
        assert [x["id"] for x in queue["items"] if x["user_id"] == s["user"]["id"]] == [app["id"]]
        assert (await code_of(api, "GET", "/api/moderation/applications", token=tok))[1] == "FORBIDDEN"
        st, body = await api.request("POST", f"/api/rooms/{room['id']}/cards", token=tok, data=_form())
        assert st == 403  # still pending
        done = await api.ok("POST", f"/api/moderation/applications/{app['id']}/approve", json={"note": "ok"},
                            token=ADMIN)
        assert (done["status"], done["note"]) == ("approved", "ok")
        assert (await code_of(api, "POST", f"/api/moderation/applications/{app['id']}/reject", json={},
                              token=ADMIN))[1] == "CONFLICT"
        await list_card(api, tok, room["id"])
        assert (await api.ok("GET", "/api/shop/application", token=tok))["status"] == "approved"


async def test_overturned_appeal_restores_shop_and_deduction(two: tuple[RunningServer, RunningServer, Clock]) -> None:
    a, b, _ = two
    async with Api(a.url) as api_a, Api(b.url) as api_b:
        s = await api_a.streamer()
        tok, uid = s["token"], s["user"]["id"]
        room = await api_a.live_room(tok)
        await api_a.ok("POST", "/api/shop/deposit", json={"amount": "300.00"}, token=tok)
        await list_card(api_b, tok, room["id"])  # warm b's cache
        v = await violate(api_a, uid, "counterfeit", deduction="500.00")  # 24 points: no listing
        ledger = await api_b.ok("GET", "/api/shop/ledger", token=tok)
        # 300.00 from the deposit, the other 200.00 from the balance.
        assert (ledger["deposit"], ledger["balance"]) == ("0.00", "-200.00")
        assert (await code_of(api_b, "POST", f"/api/rooms/{room['id']}/cards", token=tok, data=_form()))[0] == 403
        other = await api_a.streamer()
        assert (await code_of(api_a, "POST", "/api/appeals", json={"violation_id": v["id"], "text": "mine?"},
                              token=other["token"]))[1] == "NOT_FOUND"
        appeal = await api_a.ok("POST", "/api/appeals", json={"violation_id": v["id"], "text": "genuine goods"},
                                token=tok)
        assert (await code_of(api_a, "POST", "/api/appeals", json={"violation_id": v["id"], "text": "again"},
                              token=tok))[1] == "CONFLICT"
        queue = await api_a.ok("GET", "/api/moderation/appeals?status=pending", token=ADMIN)
        assert [x["id"] for x in queue["items"]] == [appeal["id"]]
        ruled = await api_a.ok("POST", f"/api/moderation/appeals/{appeal['id']}/overturn", json={"note": "proof"},
                               token=ADMIN)
        assert ruled["status"] == "overturned"
        assert (await code_of(api_a, "POST", f"/api/moderation/appeals/{appeal['id']}/uphold", json={},
                              token=ADMIN))[1] == "CONFLICT"
        # At once, on the other process: listing works, points gone, the deduction is back.
        await list_card(api_b, tok, room["id"])
        own = await api_b.ok("GET", f"/api/shops/{uid}/standing", token=tok)
        assert (own["points"], own["violations"][0]["status"]) == (0, "revoked")
        ledger = await api_b.ok("GET", "/api/shop/ledger", token=tok)
        assert (ledger["deposit"], ledger["balance"]) == ("300.00", "0.00")

        v2 = await violate(api_a, uid, "other")
        ap2 = await api_a.ok("POST", "/api/appeals", json={"violation_id": v2["id"], "text": "t"}, token=tok)
        await api_a.ok("POST", f"/api/moderation/appeals/{ap2['id']}/uphold", json={"note": "no"}, token=ADMIN)
        assert (await api_b.ok("GET", f"/api/shops/{uid}/standing"))["points"] == 3


async def test_ledger_sales_window_payouts_and_reconcile(settings_factory: Any) -> None:
    async with run_app(settings_factory(ledger_sweep_s=0.1, auto_confirm_s=600)) as srv, Api(srv.url) as api:
        clock = Clock()
        gov = srv.services.governance
        gov.set_clock(clock)
        s = await api.streamer()
        tok = s["token"]
        room = await api.live_room(tok)
        card = await list_card(api, tok, room["id"], price="19.90", stock=5, limit_per_user=2)
        from tests.aftersales_support import Sale
        sale = Sale(s, room, card)
        b1, o1 = await paid_order(api, sale)
        b2, o2 = await paid_order(api, sale)
        await api.ok("POST", f"/api/orders/{o2['id']}/cancel", token=b2["token"])  # refunded in full

        async def swept() -> Any:
            led = await api.ok("GET", "/api/shop/ledger", token=tok)
            kinds = sorted(e["kind"] for e in led["entries"])
            return led if kinds == ["refund", "sale", "sale"] else None

        led = await eventually(swept)
        # The net of o1 is frozen until its after-sales window passes after completion.
        assert (led["balance"], led["frozen"], led["available"]) == ("19.90", "19.90", "0.00")
        _, code, _e = await code_of(api, "POST", "/api/shop/payouts", json={"amount": "0.01"}, token=tok)
        assert code == "FORBIDDEN"
        await api.ok("POST", f"/api/orders/{o1['id']}/ship", json={"carrier": "SF", "tracking_no": "SF1"}, token=tok)
        await api.ok("POST", f"/api/orders/{o1['id']}/confirm", token=b1["token"])

        async def completed_in_sql() -> bool:
            from live.core.models import Order
            async with srv.services.db() as s2:
                o = await s2.get(Order, o1["id"])
                return o is not None and o.completed_at is not None
        await eventually(completed_in_sql)
        clock.advance(srv.settings.after_sales_window_s + 120)  # the clock started before completion
        led = await api.ok("GET", "/api/shop/ledger", token=tok)
        assert (led["frozen"], led["available"]) == ("0.00", "19.90")
        assert (await code_of(api, "POST", "/api/shop/payouts", json={"amount": "19.91"}, token=tok))[1] == "FORBIDDEN"
        for bad in ({"amount": "-1"}, {"amount": "1.001"}, {}):
            assert (await code_of(api, "POST", "/api/shop/payouts", json=bad, token=tok))[1] == "INVALID"
        # Three payouts of everything at once: exactly one is paid.
        results = await asyncio.gather(*(api.request("POST", "/api/shop/payouts", json={"amount": "19.90"},
                                                     token=tok) for _ in range(3)))
        assert sorted(st for st, _ in results) == [201, 403, 403], results
        led = await api.ok("GET", "/api/shop/ledger", token=tok)
        assert (led["balance"], led["available"]) == ("0.00", "0.00")
        # Reconcile: every paid and refunded cent of the orders is in the ledger, once.
        assert await gov.ledger.unbalanced() == 0
        st, text = await api.request("GET", "/metrics")
        assert "live_ledger_unbalanced_orders 0.0" in str(text)
        assert await gov.ledger.sweep() == 0
        async with srv.services.db() as s3:
            n = (await s3.execute(select(func.count()).select_from(LedgerEntry)
                                  .where(LedgerEntry.user_id == s["user"]["id"]))).scalar_one()
            assert n == 4  # sale, sale, refund, payout


async def test_transparency_totals_equal_audit_records(server: RunningServer, api: Api) -> None:
    from live.core.models import AfterSaleCase, Order, Violation
    from tests.aftersales_support import Sale
    from tests.support import SioClient

    gov = server.services.governance
    month = gov.now().strftime("%Y-%m")
    before = await api.ok("GET", f"/api/transparency?month={month}")
    # Private trading: two viewers blocked in chat in one room.
    s = await api.streamer()
    room = await api.live_room(s["token"])
    for name in ("ann", "bob"):
        viewer = await api.guest(name)
        c = SioClient()
        await c.connect(server.url, viewer["token"])
        try:
            await c.call("room:join", {"room_id": room["id"]})
            ack = await c.call("chat:send", {"room_id": room["id"], "text": "加我微信 liu888 私聊"})
            assert ack["error"]["code"] == "BLOCKED", ack
        finally:
            await c.close()
    # A shop violation (and a revoked one, which does not count), an after-sales refund.
    await api.ok("POST", "/api/shop/application", json={"shop_name": "Tea House", "category": "tea"},
                 token=s["token"])
    apps = await api.ok("GET", "/api/moderation/applications?status=pending", token=ADMIN)
    app_id = next(a["id"] for a in apps["items"] if a["user_id"] == s["user"]["id"])
    await api.ok("POST", f"/api/moderation/applications/{app_id}/approve", json={}, token=ADMIN)
    await violate(api, s["user"]["id"], "misleading", points=12)
    gone = await violate(api, s["user"]["id"], "counterfeit")
    ap = await api.ok("POST", "/api/appeals", json={"violation_id": gone["id"], "text": "t"}, token=s["token"])
    await api.ok("POST", f"/api/moderation/appeals/{ap['id']}/overturn", json={}, token=ADMIN)
    card = await list_card(api, s["token"], room["id"], price="5.00")
    buyer, order = await paid_order(api, Sale(s, room, card))
    case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales", json={"kind": "refund_only", "reason": "r"},
                        token=buyer["token"])
    await api.ok("POST", f"/api/after-sales/{case['id']}/approve", json={}, token=s["token"])
    # The audit records, read straight from SQL once the streams have landed.
    async def landed() -> bool:
        async with server.services.db() as sess:
            n = (await sess.execute(select(func.count()).select_from(Violation).where(
                Violation.room_id == room["id"], Violation.reason == "private_trading"))).scalar_one()
            o = await sess.get(Order, order["id"], populate_existing=True)
            c = (await sess.execute(select(func.count()).select_from(AfterSaleCase).where(
                AfterSaleCase.order_id == order["id"]))).scalar_one()
        return n == 2 and c == 1 and o is not None and o.refunded_at is not None
    await eventually(landed)
    await server.services.redis.delete(f"live:gov:transparency:{month}:running")  # skip the 30 s cache
    after = await api.ok("GET", f"/api/transparency?month={month}")
    pt, pt0 = after["private_trading"], before["private_trading"]
    assert pt["messages_blocked"] - pt0["messages_blocked"] == 2
    assert pt["users_penalised"] - pt0["users_penalised"] == 2
    assert pt["rooms_actioned"] - pt0["rooms_actioned"] == 1
    kinds = after["violations"]["by_kind"]
    assert kinds["misleading"] - before["violations"]["by_kind"]["misleading"] == 1
    assert kinds["counterfeit"] == before["violations"]["by_kind"]["counterfeit"]  # overturned: not counted
    assert after["violations"]["shops_penalised"] - before["violations"]["shops_penalised"] == 1
    assert after["after_sales"]["cases"] - before["after_sales"]["cases"] == 1
    assert after["after_sales"]["refunded_orders"] - before["after_sales"]["refunded_orders"] == 1
    assert Decimal(after["after_sales"]["refunded_amount"]) - Decimal(before["after_sales"]["refunded_amount"]) \
        == Decimal("5.00")
    notice = after["notices"][0]
    assert notice == {"shop_name": "Tea House", "kind": "misleading", "restriction": "no_scheduled_sales",
                      "at": notice["at"]}
    assert set(after) == {"month", "private_trading", "violations", "after_sales", "notices"}
    for bad in ("2026-13", "26-01", "3000-01", "x"):
        assert (await code_of(api, "GET", f"/api/transparency?month={bad}"))[:2] == (400, "INVALID")


async def test_past_month_is_frozen(server: RunningServer, api: Api) -> None:
    first = await api.ok("GET", "/api/transparency?month=2020-02")
    assert first["private_trading"]["messages_blocked"] == 0 and first["notices"] == []
    # A record dated in that month after it was published does not change the figures.
    from live.core.ids import new_id
    from live.core.models import Violation
    async with server.services.db() as s, s.begin():
        s.add(Violation(id=new_id(), user_id="u", room_id="r", kind="chat", reason="private_trading", text="",
                        penalty="warn", created_at=datetime(2020, 2, 10, tzinfo=UTC)))
    assert await api.ok("GET", "/api/transparency?month=2020-02") == first


async def test_server_records_private_trading_by_a_shop_and_a_lost_dispute(settings_factory: Any) -> None:
    from tests.aftersales_support import new_sale, shipped_order
    from tests.support import SioClient

    async with run_app(settings_factory(ledger_sweep_s=0.1)) as srv, Api(srv.url) as api:
        sale = await new_sale(api, stock=3)
        uid = sale.streamer["user"]["id"]
        # The shop's own account tries to take buyers off the platform in its room's chat.
        c = SioClient()
        await c.connect(srv.url, sale.token)
        try:
            await c.call("room:join", {"room_id": sale.room["id"]})
            ack = await c.call("chat:send", {"room_id": sale.room["id"], "text": "加我微信 liu888 私聊"})
            assert ack["error"]["code"] == "BLOCKED", ack
        finally:
            await c.close()
        buyer, order = await shipped_order(api, sale)
        case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales",
                            json={"kind": "refund_only", "reason": "broken"}, token=buyer["token"])
        cpath = f"/api/after-sales/{case['id']}"
        await api.ok("POST", f"{cpath}/reject", json={"note": "no"}, token=sale.token)
        await api.ok("POST", f"{cpath}/escalate", json={"note": "look"}, token=buyer["token"])
        await api.ok("POST", f"{cpath}/rule", json={"decision": "refund"}, token=ADMIN)
        # A report against its room, upheld (the streamer muted); a dismissed one is not a finding.
        for action in ("mute", "dismiss"):
            rep = await api.ok("POST", "/api/reports", json={"target": "room", "target_id": sale.room["id"],
                                                             "reason": "fake"}, token=buyer["token"])
            await api.ok("POST", f"/api/reports/{rep['id']}/resolve", json={"action": action}, token=ADMIN)

        async def both() -> Any:
            st = await api.ok("GET", f"/api/shops/{uid}/standing", token=ADMIN)
            kinds = sorted(v["kind"] for v in st["violations"])
            return st if kinds == ["after_sales", "other", "private_trading"] else None

        st = await eventually(both, timeout=20)
        assert st["points"] == 12 + 6 + 3 and st["restrictions"] == ["no_scheduled_sales"]
        # The guard's finding says why: its detector and the normalised fragment it matched.
        note = next(v["note"] for v in st["violations"] if v["kind"] == "private_trading")
        assert re.search(r"\(guard wechat: “[^”]+”\)", note), note
        # Sweeping again (as every process does) records nothing twice.
        assert await findings.sweep(srv.services.governance) == 0
        again = await api.ok("GET", f"/api/shops/{uid}/standing", token=ADMIN)
        assert len(again["violations"]) == 3


async def test_reports_show_what_was_reported(server: RunningServer, api: Api) -> None:
    from tests.support import SioClient

    s = await api.streamer()
    room = await api.live_room(s["token"], title="Tea tasting")
    card = await list_card(api, s["token"], room["id"], title="Green tea")
    viewer = await api.guest("ann")
    c = SioClient()
    await c.connect(server.url, viewer["token"])
    try:
        await c.call("room:join", {"room_id": room["id"]})
        msg = (await c.call("chat:send", {"room_id": room["id"], "text": "you are all fools"}))["message"]
    finally:
        await c.close()
    reporter = await api.guest("bob")
    ids = {}
    for target, target_id in (("message", msg["id"]), ("room", room["id"]), ("card", card["id"])):
        rep = await api.ok("POST", "/api/reports", json={"target": target, "target_id": target_id, "reason": "r"},
                           token=reporter["token"])
        ids[target] = rep["id"]

    async def listed() -> Any:
        items = {r["id"]: r for r in await api.ok("GET", "/api/reports?status=open", token=ADMIN)}
        return items if "text" in items[ids["message"]] else None  # the message reached SQL

    items = await eventually(listed)
    m, r, k = items[ids["message"]], items[ids["room"]], items[ids["card"]]
    assert (m["text"], m["author"], m["room_id"]) == ("you are all fools",
                                                      {"id": viewer["user"]["id"], "name": "ann"}, room["id"])
    assert m["target_at"]
    streamer = {"id": s["user"]["id"], "name": s["user"]["name"]}
    assert (r["title"], r["author"], r["room_id"]) == ("Tea tasting", streamer, room["id"])
    assert (k["title"], k["author"], k["room_id"]) == ("Green tea", streamer, room["id"])


async def test_reconcile_sees_a_lagging_ledger_and_a_sweep_catches_up_once(settings_factory: Any) -> None:
    from tests.aftersales_support import new_sale

    async with run_app(settings_factory(ledger_sweep_s=3600)) as srv, Api(srv.url) as api:
        ledger = srv.services.governance.ledger
        sale = await new_sale(api, stock=3)
        buyer, order = await paid_order(api, sale)
        await api.ok("POST", f"/api/orders/{order['id']}/cancel", token=buyer["token"])

        async def lagging() -> bool:  # the order (paid, then refunded) reached SQL; no entries yet
            async with srv.services.db() as s:
                from live.core.models import Order
                o = await s.get(Order, order["id"], populate_existing=True)
                return o is not None and o.refunded_amount_cents == o.paid_amount_cents > 0

        await eventually(lagging)
        assert await ledger.unbalanced() == 1
        # Two sweepers at once (as on two processes) write each entry once.
        await asyncio.gather(ledger.sweep(), ledger.sweep())
        assert await ledger.unbalanced() == 0
        led = await api.ok("GET", "/api/shop/ledger", token=sale.token)
        assert sorted((e["kind"], e["amount"]) for e in led["entries"]) == [("refund", "-19.90"), ("sale", "19.90")]
        assert led["balance"] == "0.00"
