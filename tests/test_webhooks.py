"""Webhooks: subscriptions, signed deliveries to a real local receiver, retries, ordering per
order id, replay, secret rotation, and the SSRF guard."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from live.core import keys
from live.core.ids import new_id, utcnow
from live.core.models import OutboxEvent, Webhook
from live.integrations import signing, ssrf
from live.integrations.outbox import emit, emit_many
from tests.flash_support import list_card
from tests.support import ROOT, Api, RunningServer, run_app
from tests.webhook_support import FAST, deliveries_when, receiver


@pytest.fixture
async def fast(settings_factory) -> AsyncIterator[tuple[RunningServer, Api]]:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(**FAST)) as srv, Api(srv.url) as api:
        yield srv, api


async def subscribe(api: Api, token: str, url: str, events: list[str]) -> dict[str, Any]:
    status, hook = await api.post("/api/webhooks", json={"url": url, "events": events}, token=token)
    assert status == 201, hook
    return hook


async def subscribed_sale(api: Api, token: str, url: str, event: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shop subscribed to ``event`` at ``url``, with a live room and a card of 5 on sale."""
    await subscribe(api, token, url, [event])
    room = await api.live_room(token)
    return room, await list_card(api, token, room["id"], stock=5)


async def emit_now(srv: RunningServer, type_: str, shop_id: str, key: str, **data: Any) -> None:
    """An event as a domain emits it: inside its own committed transaction."""
    async with srv.services.db() as s, s.begin():
        await emit(s, type_, shop_id, data, key)


# --- subscriptions ------------------------------------------------------------------------------
async def test_subscribe_list_delete_and_validation(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    async with receiver() as rec:
        hook = await subscribe(api, s["token"], rec.url, ["order.created", "room.live"])
        assert set(hook) >= {"id", "url", "events", "secret"} and hook["secret"].startswith("whsec_")
        assert hook["events"] == ["order.created", "room.live"]
        listed = await api.ok("GET", "/api/webhooks", token=s["token"])
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
        # Unknown events, bad bodies and URLs are INVALID and create nothing.
        for bad in ({"url": rec.url, "events": ["order.teleported"]}, {"url": rec.url, "events": []},
                    {"url": "ftp://example.com/x", "events": ["room.live"]}, {"url": rec.url},
                    {"url": "http://user:pw@example.com/", "events": ["room.live"]},
                    {"url": "http://a..b/", "events": ["room.live"]}, {"url": "http://[::1/", "events": ["room.live"]},
                    {"url": "http://x:99999/", "events": ["room.live"]}, {"url": 5, "events": ["room.live"]},
                    {"url": rec.url, "events": "room.live"}):
            status, body = await api.post("/api/webhooks", json=bad, token=s["token"])
            assert status == 400 and body["error"]["code"] == "INVALID", (bad, status, body)
        assert len(await api.ok("GET", "/api/webhooks", token=s["token"])) == 1
        # A viewer has no shop; another streamer sees nothing of this one's webhooks.
        v = await api.guest()
        status, body = await api.post("/api/webhooks", json={"url": rec.url, "events": ["room.live"]},
                                      token=v["token"])
        assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
        other = await api.streamer()
        assert await api.ok("GET", "/api/webhooks", token=other["token"]) == []
        status, _ = await api.delete(f"/api/webhooks/{hook['id']}", token=other["token"])
        assert status == 404
        await api.ok("DELETE", f"/api/webhooks/{hook['id']}", token=s["token"])
        assert await api.ok("GET", "/api/webhooks", token=s["token"]) == []


async def test_moderator_subscribes_platform_wide(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    mod = "test-admin-token"  # the bootstrap moderator credential
    s = await api.streamer()
    async with receiver() as rec:
        hook = await subscribe(api, mod, rec.url, ["room.ended"])
        try:
            room = await api.live_room(s["token"])
            await api.ok("POST", f"/api/rooms/{room['id']}/end", token=s["token"])
            await rec.wait(lambda r: any(x.body["data"]["room_id"] == room["id"] for x in r.ok()), what="room.ended")
            assert [h["id"] for h in await api.ok("GET", "/api/webhooks", token=mod)] == [hook["id"]]
            assert await api.ok("GET", "/api/webhooks", token=s["token"]) == []
        finally:
            await api.ok("DELETE", f"/api/webhooks/{hook['id']}", token=mod)


# --- delivery -----------------------------------------------------------------------------------
async def test_room_events_arrive_signed_and_verifiable(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    async with receiver() as rec:
        hook = await subscribe(api, s["token"], rec.url, ["room.live", "room.ended"])
        room = await api.live_room(s["token"])
        await api.ok("POST", f"/api/rooms/{room['id']}/end", token=s["token"])
        await rec.wait(lambda r: len(r.ok()) == 2, what="room.live and room.ended")
        assert [r.type for r in rec.ok()] == ["room.live", "room.ended"]  # in order per room
        for r in rec.ok():
            assert r.headers["X-Live-Event"] == r.type
            assert signing.verify(r.headers["X-Live-Signature"], r.raw, hook["secret"])
            assert not signing.verify(r.headers["X-Live-Signature"], r.raw, "whsec_wrong")
            assert not signing.verify(r.headers["X-Live-Signature"], r.raw + b" ", hook["secret"])
            assert set(r.body) == {"id", "type", "created_at", "data"}
            assert r.body["data"]["room_id"] == room["id"]
        assert len({r.headers["X-Live-Delivery"] for r in rec.ok()}) == 2
        assert len({r.body["id"] for r in rec.ok()}) == 2
        # An old signature is refused: the tolerance window stops replays of captured requests.
        old = signing.header([hook["secret"]], rec.ok()[0].raw, t=1_000_000_000)
        assert not signing.verify(old, rec.ok()[0].raw, hook["secret"])


async def test_a_room_ending_by_itself_is_reported(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(**{**FAST, "room_idle_end_s": 0.5})) as srv, Api(srv.url) as api, \
            receiver() as rec:
        s = await api.streamer()
        await subscribe(api, s["token"], rec.url, ["room.live", "room.ended"])
        room = await api.live_room(s["token"])  # nobody publishes or keeps a studio open
        await rec.wait(lambda r: len(r.ok()) == 2, what="room.live, then room.ended by the idle loop")
        assert [r.type for r in rec.ok()] == ["room.live", "room.ended"]
        assert rec.ok()[1].body["data"]["room_id"] == room["id"] and rec.ok()[1].body["data"]["ended_at"]


def _doc_snippet(lang: str) -> str:
    """The first ``lang`` code block of docs/integrations.md that defines ``verify``."""
    text = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "verify(" in b)


async def test_the_documented_python_and_node_verifiers_accept_a_real_delivery(
        fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    async with receiver() as rec:
        hook = await subscribe(api, s["token"], rec.url, ["room.live"])
        await api.live_room(s["token"])
        await rec.wait(lambda r: len(r.ok()) == 1, what="room.live")
    r = rec.ok()[0]
    cases = [(hook["secret"], r.raw, True), ("whsec_wrong", r.raw, False), (hook["secret"], r.raw + b"x", False)]
    scope: dict[str, Any] = {}
    exec(_doc_snippet("python"), scope)  # the snippet as a receiver would paste it
    assert [scope["verify"](r.headers["X-Live-Signature"], raw, sec) for sec, raw, _ in cases] == [c[2] for c in cases]
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = _doc_snippet("js") + """
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(cases.map(([h, b, s]) => verify(h, Buffer.from(b, "base64"), s))));
"""
    payload = orjson.dumps([[r.headers["X-Live-Signature"], base64.b64encode(raw).decode(), sec]
                            for sec, raw, _ in cases])
    proc = await asyncio.create_subprocess_exec(node, "-e", script, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(payload), 30)
    assert orjson.loads(out) == [c[2] for c in cases]


async def test_order_created_arrives_for_a_purchase(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    async with receiver() as rec:
        room, card = await subscribed_sale(api, s["token"], rec.url, "order.created")
        v = await api.guest()
        ack = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": uuid.uuid4().hex},
                           token=v["token"])
        await rec.wait(lambda r: len(r.ok()) == 1, what="order.created")
        data = rec.ok()[0].body["data"]
        assert data["order_id"] == ack["order"]["id"] and data["card_id"] == card["id"] and data["qty"] == 1
        # The persister applying the same stream entries again (as after a crash before its
        # ack) writes no second order, so no second event.
        compact = await srv.services.redis.hget(keys.card_orders(card["id"]), ack["order"]["id"])
        assert compact
        await srv.services.orders._apply(keys.card_stream(card["id"]), [("0-1", {"t": "created", "o": compact})])
        await asyncio.sleep(0.3)
        assert len(rec.got) == 1


async def test_card_sold_out_arrives_once_when_the_card_row_turns_sold_out(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    async with receiver() as rec:
        room, card = await subscribed_sale(api, s["token"], rec.url, "card.sold_out")
        entry = ("0-1", {"t": "card", "s": "sold_out", "at": "0"})
        for _ in range(2):  # a status entry the persister applies twice (a replay) reports once
            await srv.services.orders._apply(keys.card_stream(card["id"]), [entry])
        await rec.wait(lambda r: len(r.ok()) == 1, what="card.sold_out")
        assert rec.ok()[0].body["data"] == {"card_id": card["id"], "room_id": room["id"], "title": card["title"],
                                            "stock": 5}
        await asyncio.sleep(0.3)
        assert len(rec.got) == 1


async def test_failing_endpoint_is_retried_until_it_answers(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    async with receiver(answer=lambda n, body: 500 if n < 3 else 200) as rec:
        hook = await subscribe(api, s["token"], rec.url, ["room.live"])
        await api.live_room(s["token"])
        await rec.wait(lambda r: len(r.ok()) == 1, what="a 2xx after three 500s")
        assert [r.status for r in rec.got] == [500, 500, 500, 200]
        # Every attempt is the same delivery of the same event.
        assert len({r.headers["X-Live-Delivery"] for r in rec.got}) == 1
        assert len({r.body["id"] for r in rec.got}) == 1

        (d,) = await deliveries_when(api, s["token"], hook["id"], lambda ds: ds[0]["status"] == "delivered")
        assert d["status"] == "delivered" and d["attempts"] == 4 and d["last_code"] == 200
        assert [a["code"] for a in d["log"]] == [500, 500, 500, 200]
        status, text = await api.get("/metrics")
        counts = dict(re.findall(r'live_webhook_attempts_total\{result="(\w+)"\} ([\d.]+)', text.decode()))
        # (at least: the shared test database may hold other tests' leftovers for this sender)
        assert float(counts["retry"]) >= 3 and float(counts["delivered"]) >= 1


async def test_gives_up_after_max_attempts_then_replay_sends_it_again(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(**{**FAST, "webhook_max_attempts": 2})) as srv, Api(srv.url) as api:
        s = await api.streamer()
        up = False
        async with receiver(answer=lambda n, body: 200 if up else 503) as rec:
            hook = await subscribe(api, s["token"], rec.url, ["room.live"])
            await api.live_room(s["token"])
            (d,) = await deliveries_when(api, s["token"], hook["id"], lambda ds: ds and ds[0]["status"] == "failed")
            assert d["status"] == "failed" and d["attempts"] == 2 and [a["code"] for a in d["log"]] == [503, 503]
            up = True
            status, replay = await api.post(f"/api/webhooks/{hook['id']}/deliveries/{d['id']}/replay",
                                            token=s["token"])
            assert status == 202 and replay["replay_of"] == d["id"] and replay["id"] != d["id"]
            await rec.wait(lambda r: len(r.ok()) == 1, what="the replay")
            got = rec.ok()[0]
            assert got.headers["X-Live-Delivery"] == replay["id"]
            assert got.body["id"] == rec.got[0].body["id"]  # the same event: receivers dedupe on it
            # Replaying a delivered one sends it once more; unknown ids are NOT_FOUND.
            await api.ok("POST", f"/api/webhooks/{hook['id']}/deliveries/{replay['id']}/replay", token=s["token"])
            await rec.wait(lambda r: len(r.ok()) == 2, what="the second replay")
            status, _ = await api.post(f"/api/webhooks/{hook['id']}/deliveries/nope/replay", token=s["token"])
            assert status == 404


async def test_gives_up_once_the_event_is_too_old(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(**{**FAST, "webhook_max_age_s": 0.5, "webhook_max_attempts": 100})) as srv, \
            Api(srv.url) as api, receiver(answer=lambda n, body: 500) as rec:
        s = await api.streamer()
        hook = await subscribe(api, s["token"], rec.url, ["order.paid"])
        await emit_now(srv, "order.paid", s["user"]["id"], f"o-{new_id()}")
        (d,) = await deliveries_when(api, s["token"], hook["id"], lambda ds: ds and ds[0]["status"] == "failed")
        assert d["status"] == "failed" and 2 <= d["attempts"] < 100


async def test_finished_deliveries_and_their_events_are_pruned(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(**{**FAST, "webhook_retention_s": 0.5})) as srv, Api(srv.url) as api, \
            receiver() as rec:
        s = await api.streamer()
        hook = await subscribe(api, s["token"], rec.url, ["order.paid"])
        await emit_now(srv, "order.paid", s["user"]["id"], f"o-{new_id()}")
        await rec.wait(lambda r: len(r.ok()) == 1, what="the delivery")
        event_id = rec.ok()[0].body["id"]
        await deliveries_when(api, s["token"], hook["id"], lambda ds: ds == [])
        async with srv.services.db() as sess:
            assert (await sess.execute(select(OutboxEvent).where(OutboxEvent.id == event_id))).first() is None


async def test_events_of_one_order_arrive_in_order_under_retries(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    failures = {"first": 5}

    def answer(n: int, body: Any) -> int:
        # The first event of order A fails five times (FAST allows six); everything else is accepted.
        if body["data"].get("step") == 1 and body["data"]["order"] == "A" and failures["first"] > 0:
            failures["first"] -= 1
            return 500
        return 200

    async with receiver(answer=answer) as rec:
        await subscribe(api, s["token"], rec.url, ["order.paid", "order.shipped", "order.completed"])
        a, b = f"order-a-{new_id()}", f"order-b-{new_id()}"
        await emit_now(srv, "order.paid", s["user"]["id"], a, order="A", step=1)
        await emit_now(srv, "order.shipped", s["user"]["id"], a, order="A", step=2)
        await emit_now(srv, "order.paid", s["user"]["id"], b, order="B", step=1)
        await emit_now(srv, "order.completed", s["user"]["id"], a, order="A", step=3)
        await rec.wait(lambda r: len(r.ok()) == 4, what="all four events")
        steps_a = [r.body["data"]["step"] for r in rec.ok() if r.body["data"]["order"] == "A"]
        assert steps_a == [1, 2, 3]
        # Order A's own later events never overtook its failing first one...
        first_ok = next(i for i, r in enumerate(rec.got) if r.body["data"]["order"] == "A" and r.status == 200)
        assert all(r.body["data"]["step"] == 1 for r in rec.got[:first_ok] if r.body["data"]["order"] == "A")
        # ...while order B was not held up by A's retries.
        b_at = next(i for i, r in enumerate(rec.got) if r.body["data"]["order"] == "B")
        assert b_at < first_ok


async def test_a_later_event_goes_once_the_earlier_one_is_given_up(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(**{**FAST, "webhook_max_attempts": 3})) as srv, Api(srv.url) as api, \
            receiver(answer=lambda n, body: 500 if body["data"]["step"] == 1 else 200) as rec:
        s = await api.streamer()
        hook = await subscribe(api, s["token"], rec.url, ["order.paid", "order.shipped"])
        key = f"o-{new_id()}"
        await emit_now(srv, "order.paid", s["user"]["id"], key, step=1)
        await emit_now(srv, "order.shipped", s["user"]["id"], key, step=2)
        await rec.wait(lambda r: len(r.ok()) == 1, what="the later event")
        # All three attempts of the first one came before the second one was sent.
        assert [(r.body["data"]["step"], r.status) for r in rec.got] == [(1, 500)] * 3 + [(2, 200)]
        ds = await deliveries_when(api, s["token"], hook["id"], lambda ds: "delivered" in {d["status"] for d in ds})
        assert [(d["type"], d["status"]) for d in ds] == [("order.shipped", "delivered"), ("order.paid", "failed")]


async def test_two_processes_share_the_work_without_sending_twice(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """Two servers on one database: every event is fanned out once and sent once, and each
    order's events still arrive in order."""
    async with run_app(settings_factory(**FAST)) as one, run_app(settings_factory(**FAST)) as two, \
            Api(one.url) as api, receiver(answer=lambda n, body: 500 if n % 7 == 3 else 200) as rec:
        s = await api.streamer()
        shop = s["user"]["id"]
        await subscribe(api, s["token"], rec.url, ["order.paid", "order.shipped", "order.completed"])
        keys = [f"o{i}-{new_id()}" for i in range(10)]
        for step, type_ in enumerate(["order.paid", "order.shipped", "order.completed"]):
            for i, key in enumerate(keys):
                await emit_now(one if i % 2 else two, type_, shop, key, order=key, step=step)
        await rec.wait(lambda r: len(r.ok()) == 30, timeout=30, what="thirty events")
        assert len({r.body["id"] for r in rec.ok()}) == 30  # none sent twice after a 2xx
        for key in keys:
            assert [r.body["data"]["step"] for r in rec.ok() if r.body["data"]["order"] == key] == [0, 1, 2]
        senders = {r.headers["X-Live-Delivery"] for r in rec.got}
        assert len(senders) == 30  # retries reuse their delivery id


async def test_a_dead_endpoint_does_not_hold_up_another(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    shop = s["user"]["id"]
    async with receiver() as dead, receiver() as alive:
        dead.hang = asyncio.Event()  # answers nothing (each attempt runs into the timeout)
        hooks = [await subscribe(api, s["token"], dead.url, ["order.paid", "order.shipped"]),
                 await subscribe(api, s["token"], alive.url, ["order.shipped"])]
        # A backlog for the dead endpoint alone, older than anything the live one gets.
        async with srv.services.db() as sess, sess.begin():
            await emit_many(sess, [("order.paid", shop, {"i": i}, f"o{i}-{new_id()}", None) for i in range(300)])
        for i in range(12):
            await emit_now(srv, "order.shipped", shop, f"o{i}-{new_id()}", i=i)
        await alive.wait(lambda r: len(r.ok()) == 12, timeout=10, what="all twelve at the live endpoint")
        assert dead.got == []
        for h in hooks:  # its backlog is no other test's business
            await api.ok("DELETE", f"/api/webhooks/{h['id']}", token=s["token"])


async def test_requests_in_flight_are_bounded_per_endpoint_and_per_process(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(**{**FAST, "webhook_concurrency": 2, "webhook_max_inflight": 3,
                                           "webhook_timeout_s": 10})) as srv, \
            Api(srv.url) as api, receiver() as a, receiver() as b:
        s = await api.streamer()
        a.hang, b.hang = asyncio.Event(), asyncio.Event()
        hooks = [await subscribe(api, s["token"], a.url, ["order.paid"]),
                 await subscribe(api, s["token"], b.url, ["order.paid"])]
        for i in range(6):  # six orders: nothing waits on ordering, only on the bounds
            await emit_now(srv, "order.paid", s["user"]["id"], f"o{i}-{new_id()}")
        await a.wait(lambda r: a.holding + b.holding == 3, what="three requests held")
        await asyncio.sleep(0.3)  # several more sender ticks: still no more than the bounds
        assert a.max_holding <= 2 and b.max_holding <= 2 and a.holding + b.holding == 3
        for h in hooks:
            await api.ok("DELETE", f"/api/webhooks/{h['id']}", token=s["token"])


async def test_rotation_old_and_new_secrets_both_verify_during_grace(fast: tuple[RunningServer, Api]) -> None:
    srv, api = fast
    s = await api.streamer()
    async with receiver() as rec:
        hook = await subscribe(api, s["token"], rec.url, ["order.paid"])
        rotated = await api.ok("POST", f"/api/webhooks/{hook['id']}/rotate", json={}, token=s["token"])
        assert rotated["secret"] != hook["secret"] and rotated["previous_secret_valid_until"]
        await emit_now(srv, "order.paid", s["user"]["id"], f"o-{new_id()}", n=1)
        await rec.wait(lambda r: len(r.ok()) == 1, what="a delivery during the grace period")
        r = rec.ok()[0]
        assert r.headers["X-Live-Signature"].count("v1=") == 2
        assert signing.verify(r.headers["X-Live-Signature"], r.raw, rotated["secret"])
        assert signing.verify(r.headers["X-Live-Signature"], r.raw, hook["secret"])
        # With no grace, only the newest secret signs.
        again = await api.ok("POST", f"/api/webhooks/{hook['id']}/rotate", json={"grace_s": 0}, token=s["token"])
        await emit_now(srv, "order.paid", s["user"]["id"], f"o-{new_id()}", n=2)
        await rec.wait(lambda r: len(r.ok()) == 2, what="a delivery after the grace period")
        r = rec.ok()[1]
        assert r.headers["X-Live-Signature"].count("v1=") == 1
        assert signing.verify(r.headers["X-Live-Signature"], r.raw, again["secret"])
        assert not signing.verify(r.headers["X-Live-Signature"], r.raw, rotated["secret"])
        for bad in (-1, True, "60", 10**9):
            status, body = await api.post(f"/api/webhooks/{hook['id']}/rotate", json={"grace_s": bad},
                                          token=s["token"])
            assert (status, body["error"]["code"]) == (400, "INVALID"), bad
        status, _ = await api.post(f"/api/webhooks/{new_id()}/rotate", json={}, token=s["token"])
        assert status == 404


# --- the SSRF guard -----------------------------------------------------------------------------
PRIVATE = ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://192.168.0.10/",
           "http://169.254.169.254/latest/meta-data", "http://100.64.0.1/", "http://100.100.100.200/",
           "http://[::1]:8080/", "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://[fd00:ec2::254]/",
           "http://0.0.0.0/", "http://224.0.0.1/", "http://[64:ff9b::a00:1]/", "http://localhost:9/hook"]


async def test_private_targets_are_refused(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(webhook_allow_private=False)) as srv, Api(srv.url) as api:
        s = await api.streamer()
        for url in PRIVATE:
            status, body = await api.post("/api/webhooks", json={"url": url, "events": ["room.live"]},
                                          token=s["token"])
            assert (status, body["error"]["code"]) == (400, "INVALID"), (url, body)
            assert "refused" in body["error"]["message"]
        assert await api.ok("GET", "/api/webhooks", token=s["token"]) == []


def test_address_rules() -> None:
    import ipaddress

    for a in ("8.8.8.8", "2606:4700::1111", "93.184.216.34"):
        assert ssrf.allowed(ipaddress.ip_address(a)), a
    for a in ("127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "::", "ff02::1", "198.18.0.1"):
        assert not ssrf.allowed(ipaddress.ip_address(a)), a


async def test_connect_time_check_refuses_a_name_that_now_resolves_private(
        settings_factory) -> None:  # type: ignore[no-untyped-def]
    """DNS rebinding: a subscription whose host was public when checked but resolves to
    loopback at send time is refused at connect, never reaching the receiver."""
    async with run_app(settings_factory(**{**FAST, "webhook_allow_private": False})) as srv, Api(srv.url) as api:
        s = await api.streamer()
        async with receiver() as rec:
            port = rec.url.split(":")[2].split("/")[0]
            hook_id = new_id()
            # Written straight to SQL: the subscription-time check would refuse it (tested above).
            async with srv.services.db() as sess, sess.begin():
                sess.add(Webhook(id=hook_id, owner_id=s["user"]["id"], shop_id=s["user"]["id"],
                                 url=f"http://localhost:{port}/hook", events=["order.paid"], secret="whsec_x",
                                 prev_secret=None, prev_until=None, created_at=utcnow()))
            await emit_now(srv, "order.paid", s["user"]["id"], f"o-{new_id()}")
            ds = await deliveries_when(api, s["token"], hook_id, lambda ds: ds and ds[0]["log"])
            assert ds[0]["log"][0]["code"] is None and "refused address" in ds[0]["log"][0]["error"]
            assert rec.got == [] and not rec.entered.is_set()
            async with srv.services.db() as sess:
                assert (await sess.execute(select(Webhook.url).where(Webhook.id == hook_id))).scalar()
            await api.ok("DELETE", f"/api/webhooks/{hook_id}", token=s["token"])


async def test_guarded_resolver_refuses_loopback_names() -> None:
    resolver = ssrf.GuardedResolver(allow_private=False)
    try:
        with pytest.raises(OSError):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    with pytest.raises(ssrf.Refused):
        await ssrf.check_url("http://localhost/", allow_private=False)
