"""The Double-11 verdict (live.loadtest.verdict11) and its webhook receiver (live.loadtest.receiver).

A tiny rehearsal against a real server (real Redis, real database): a card, a few orders, two
payments, an after-sales case whose 1-second reply deadline approves it, a webhook to the
receiver, some chat with one private-trading attempt. The verdict passes on a clean server and
fails, naming the right check, when the server is made to lose an order or to fire a deadline
twice (the test-only ``fault_injection`` setting).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from live.core.ids import new_id, utcnow
from live.core.models import AfterSaleCase, AfterSaleStep, LedgerEntry
from live.core.settings import SettingsError
from live.integrations import signing
from live.integrations.outbox import EVENTS
from live.loadtest.receiver import EVENTS as RECEIVER_EVENTS
from live.loadtest.receiver import WebhookReceiver
from live.loadtest.verdict11 import CHECKS, Check, Scope, judge, passed
from tests.aftersales_support import buy, eventually, new_sale
from tests.support import Api, RunningServer, SioClient, run_app
from tests.webhook_support import FAST

PRIVATE = "加我微信 abc123 私聊更便宜"
QUICK: dict[str, Any] = {**FAST, "after_sales_reply_s": 1.0, "sweeper_interval_s": 0.2, "ledger_sweep_s": 0.2}


# --- the receiver ---------------------------------------------------------------------------------
@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver({"wh1": "s3cret"}) as r:
        yield r


async def post(url: str, event: dict[str, Any], headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, data=orjson.dumps(event), headers=headers) as r:
        return r.status


def signed(event: dict[str, Any], secret: str = "s3cret", t: int | None = None) -> dict[str, str]:
    return {"X-Live-Event": str(event["type"]), "X-Live-Signature": signing.header([secret], orjson.dumps(event), t),
            "Content-Type": "application/json"}


EVENT = {"id": "ev1", "type": "order.paid", "created_at": "2026-11-26T00:00:00.000Z", "data": {"order_id": "o1"}}


async def test_receiver_counts_a_good_delivery(receiver: WebhookReceiver) -> None:
    assert await post(receiver.url, EVENT, signed(EVENT)) == 200
    assert await post(receiver.url_for("wh1"), {**EVENT, "id": "ev2"}, signed({**EVENT, "id": "ev2"})) == 200
    c = receiver.counts
    assert dict(c.delivered) == {"ev1": 1, "ev2": 1} and c.by_webhook["wh1"]["ev1"] == 1
    assert (c.unsigned, c.bad_signature, c.unknown, c.duplicates) == (0, 0, 0, 0)


async def test_receiver_refuses_and_counts_an_unsigned_delivery(receiver: WebhookReceiver) -> None:
    assert await post(receiver.url, EVENT, {"X-Live-Event": "order.paid"}) == 401
    assert await post(receiver.url, EVENT, {"X-Live-Event": "order.paid", "X-Live-Signature": "v1=abc"}) == 401
    assert receiver.counts.unsigned == 2 and not receiver.counts.delivered


async def test_receiver_refuses_and_counts_a_bad_signature(receiver: WebhookReceiver) -> None:
    assert await post(receiver.url, EVENT, signed(EVENT, secret="wrong")) == 401
    assert await post(receiver.url, EVENT, signed(EVENT, t=int(time.time()) - 3600)) == 401  # a replay
    tampered = signed(EVENT)
    assert await post(receiver.url, {**EVENT, "data": {"order_id": "o2"}}, tampered) == 401
    assert receiver.counts.bad_signature == 3 and not receiver.counts.delivered


async def test_receiver_refuses_and_counts_unknown_webhooks_and_events(receiver: WebhookReceiver) -> None:
    assert await post(receiver.url_for("nobody"), EVENT, signed(EVENT)) == 404
    odd = {**EVENT, "type": "order.teleported"}
    assert await post(receiver.url, odd, signed(odd)) == 400
    assert await post(receiver.url, EVENT, {**signed(EVENT), "X-Live-Event": "room.live"}) == 400
    async with WebhookReceiver() as empty:  # told of no webhook at all
        assert await post(empty.url, EVENT, signed(EVENT)) == 404
        assert empty.counts.unknown == 1
    assert receiver.counts.unknown == 3 and not receiver.counts.delivered


def test_receiver_knows_every_event_type_the_server_emits() -> None:
    assert RECEIVER_EVENTS == EVENTS


async def test_receiver_counts_duplicates_once_delivered(receiver: WebhookReceiver) -> None:
    for _ in range(3):
        assert await post(receiver.url, EVENT, signed(EVENT)) == 200
    assert receiver.counts.delivered["ev1"] == 3 and receiver.counts.duplicates == 2
    assert receiver.counts.summary()["delivered_events"] == 1


# --- the test-only setting ------------------------------------------------------------------------------
def test_fault_injection_is_refused_without_the_test_switch(settings_factory: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVE_TEST_FAULTS", raising=False)
    with pytest.raises(SettingsError, match="fault_injection"):
        settings_factory(fault_injection="lose_order")
    monkeypatch.setenv("LIVE_TEST_FAULTS", "1")
    with pytest.raises(SettingsError, match="fault_injection"):
        settings_factory(fault_injection="lose_everything")
    assert settings_factory(fault_injection="double_deadline, lose_order").fault_injection == \
        "double_deadline,lose_order"


# --- a tiny rehearsal, judged ------------------------------------------------------------------------------
async def rehearse(srv: RunningServer, rec: WebhookReceiver) -> Scope:
    """A card, 3 orders (the first left unpaid), 2 paid, one refunded by its reply deadline, a
    webhook, chat with one private-trading attempt."""
    started = time.time() - 0.5
    async with Api(srv.url) as api:
        sale = await new_sale(api, stock=5, limit=1)
        hook = await api.ok("POST", "/api/webhooks", json={"url": rec.url, "events": ["order.created", "order.paid",
                            "order.refunded", "aftersale.updated", "card.sold_out"]}, token=sale.token)
        rec.add_secret(hook["id"], hook["secret"])
        b1, b2, b3 = [await api.guest(f"b{i}") for i in range(3)]
        acked = [(await buy(api, sale, b))["id"] for b in (b1, b2, b3)]
        for b, oid in ((b2, acked[1]), (b3, acked[2])):
            assert (await api.ok("POST", f"/api/orders/{oid}/pay", token=b["token"]))["status"] == "paid"
        case = await api.ok("POST", f"/api/orders/{acked[2]}/after-sales",
                            json={"kind": "refund_only", "reason": "wrong colour"}, token=b3["token"])

        chat = SioClient()
        await chat.connect(srv.url, b1["token"])
        assert (await chat.call("room:join", {"room_id": sale.room["id"]}))["ok"] is True
        blocked = 0
        for text in ("多少钱", PRIVATE, "好看"):
            ack = await chat.call("chat:send", {"room_id": sale.room["id"], "text": text})
            err = ack.get("error") or {}
            blocked += err.get("code") == "BLOCKED" and err.get("reason") == "private_trading"
        await chat.close()
        assert blocked == 1

        async def refunded() -> bool:
            c = await api.ok("GET", f"/api/after-sales/{case['id']}", token=b3["token"])
            return bool(c["status"] == "refunded")

        await eventually(refunded, timeout=10)  # the 1 s reply deadline approved it
    return Scope(base_url=srv.url, admin_token=srv.settings.admin_token, room_ids=[sale.room["id"]],
                 card_ids=[sale.card["id"]], shop_ids=[sale.streamer["user"]["id"]],
                 user_tokens={sale.streamer["user"]["id"]: sale.token}, started_at=started,
                 acked_order_ids={sale.card["id"]: acked}, webhook_ids=[hook["id"]], chat_sent_private=blocked)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def test_the_verdict_passes_on_a_clean_server(settings_factory: Any) -> None:
    async with WebhookReceiver() as rec, run_app(settings_factory(**QUICK)) as srv:
        scope = await rehearse(srv, rec)
        checks = await judge(scope, rec, timeout=30)
        # A ledger that moves money no order explains: the money check names the order.
        paid_order = scope.acked_order_ids[scope.card_ids[0]][1]
        async with srv.services.db() as s, s.begin():
            s.add(LedgerEntry(id=new_id(), user_id=scope.shop_ids[0], kind="sale", bucket="balance",
                              amount_cents=500, source=f"test:{paid_order}", order_id=paid_order, at=utcnow()))
        skewed = by_name(await judge(scope, rec, timeout=2))
    assert [c.name for c in checks] == list(CHECKS)
    assert passed(checks), [c.to_dict() for c in checks if not c.ok]
    got = by_name(checks)
    # The checks looked at something: the numbers the run made are the ones they found.
    assert got["orders"].detail["cards"][scope.card_ids[0]]["acked"] == 3
    shop = got["money"].detail["shops"][scope.shop_ids[0]]
    assert shop["paid_cents"] == 2 * 1990 and shop["refunded_cents"] == 1990 and shop["ledger_cents"] == 1990
    assert got["deadlines"].detail["fired"] == 1 and got["deadlines"].detail["cases"] == 1
    hook = got["webhooks"].detail["webhooks"][scope.webhook_ids[0]]
    assert hook["emitted"] >= 7 and hook["received_events"] == hook["emitted"]  # 3 created, 2 paid, refund, steps
    assert got["private_trading"].detail["server_blocked_chat"] == 1
    assert not skewed["money"].ok and skewed["money"].detail["mismatched"][0]["order_id"] == paid_order
    assert all(c.ok for c in skewed.values() if c.name != "money")


async def test_the_verdict_fails_when_the_server_loses_an_order(settings_factory: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVE_TEST_FAULTS", "1")
    async with WebhookReceiver() as rec, run_app(settings_factory(**QUICK, fault_injection="lose_order")) as srv:
        scope = await rehearse(srv, rec)
        got = by_name(await judge(scope, rec, timeout=4))
    lost = got["orders"].detail["cards"][scope.card_ids[0]]
    assert not got["orders"].ok and lost["missing_ids"] == [scope.acked_order_ids[scope.card_ids[0]][0]]
    assert not got["stock_invariant"].ok  # SQL holds one unit less than Redis sold
    assert got["deadlines"].ok and got["money"].ok and got["per_user_limits"].ok


async def test_the_verdict_fails_when_a_deadline_fires_twice(settings_factory: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVE_TEST_FAULTS", "1")
    async with WebhookReceiver() as rec, run_app(settings_factory(**QUICK, fault_injection="double_deadline")) as srv:
        scope = await rehearse(srv, rec)
        got = by_name(await judge(scope, rec, timeout=4))
    d = got["deadlines"].detail
    assert not got["deadlines"].ok and d["double_fired"] == 1 and d["fired"] == 2
    assert d["double_fired_steps"][0]["after"] == "refunded"
    assert got["orders"].ok and got["stock_invariant"].ok and got["money"].ok


async def test_the_window_audit_is_for_moderators_and_validates_its_input(api: Api, server: RunningServer) -> None:
    viewer = await api.guest("curious")
    status, res = await api.post("/api/audit/window", json={"since": 0}, token=viewer["token"])
    assert status == 403 and res["error"]["code"] == "FORBIDDEN"
    admin = server.settings.admin_token
    for bad in ({}, {"since": "yesterday"}, {"since": -1}, {"since": 0, "sections": ["gossip"]},
                {"since": 0, "card_ids": ["x" * 81]}):
        status, res = await api.post("/api/audit/window", json=bad, token=admin)
        assert status in (400, 422) and res["error"]["code"] == "INVALID", (bad, res)
    empty = await api.ok("POST", "/api/audit/window", json={"since": int(time.time())}, token=admin)
    assert empty["money"]["shops"] == {} and empty["deadlines"]["cases"] == 0 and empty["webhooks"] == {}
    assert empty["chat"]["private_trading_blocked"] == 0


async def test_the_deadlines_audit_names_missed_and_early_fires(api: Api, server: RunningServer) -> None:
    """Records as a broken sweeper would leave them: a case whose reply deadline passed a minute
    ago without a step, and one approved by ``system`` long before its deadline."""
    now = utcnow()
    reply = timedelta(seconds=server.settings.after_sales_reply_s)
    card = "auditcard" + str(int(time.time() * 1000))

    def case(cid: str, status: str, opened: Any, deadline: Any) -> AfterSaleCase:
        return AfterSaleCase(id=cid, order_id=cid[:-3], card_id=card, user_id="u", streamer_id="s",
                             kind="refund_only", status=status, reason="r", amount_cents=100, deadline=deadline,
                             created_at=opened, version=1)

    async with server.services.db() as s, s.begin():
        s.add_all([case(f"{card}-o1-c1", "requested", now - reply - timedelta(seconds=60),
                        now - timedelta(seconds=60)),
                   AfterSaleStep(case_id=f"{card}-o1-c1", seq=0, status="requested", by="u",
                                 at=now - reply - timedelta(seconds=60), note=""),
                   case(f"{card}-o2-c1", "refunded", now - timedelta(seconds=10), None),
                   AfterSaleStep(case_id=f"{card}-o2-c1", seq=0, status="requested", by="u",
                                 at=now - timedelta(seconds=10), note=""),
                   AfterSaleStep(case_id=f"{card}-o2-c1", seq=1, status="refunded", by="system",
                                 at=now - timedelta(seconds=9), note="deadline")])
    got = await api.ok("POST", "/api/audit/window", token=server.settings.admin_token,
                       json={"since": 0, "card_ids": [card], "sections": ["deadlines"]})
    d = got["deadlines"]
    assert (d["cases"], d["fired"], d["missed"], d["early"], d["double_fired"]) == (2, 1, 1, 1, 0)
    assert d["missed_cases"][0]["case_id"] == f"{card}-o1-c1" and d["early_steps"][0]["case_id"] == f"{card}-o2-c1"


def test_webhook_delivery_still_under_way_passes_a_phase_but_not_the_end() -> None:
    """At-least-once delivery converges: after a phase, events the server still has pending are
    in flight; at the end every one must have arrived. A failed delivery fails either way."""
    from live.loadtest.verdict11 import _webhooks

    def window(pending: int, failed: int = 0) -> dict[str, Any]:
        return {"h1": {"found": True, "event_ids": ["e1", "e2"], "events_by_type": {"order.paid": 2},
                       "not_fanned_out": 0, "deliveries": {"pending": pending, "failed": failed}}}

    assert _webhooks(window(pending=2), None, final=False).ok
    assert not _webhooks(window(pending=2), None, final=True).ok
    assert _webhooks(window(pending=0), None, final=True).ok
    assert not _webhooks(window(pending=0, failed=1), None, final=False).ok
