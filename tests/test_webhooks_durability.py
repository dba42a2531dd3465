"""A webhook event survives kill -9 of the server between its commit and its delivery."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import pytest

from live.integrations import signing
from tests.support import Api, free_port, spawn_server, stop_server, wait_healthy
from tests.webhook_support import deliveries_when, receiver

pytestmark = pytest.mark.slow


async def test_kill_9_mid_delivery_loses_no_event() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="live-hook-crash-")).resolve()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"LIVE_DATA_DIR": str(data_dir), "LIVE_SECRET": "hook-crash-secret-" + "z" * 20,
           "LIVE_WEBHOOK_ALLOW_PRIVATE": "true", "LIVE_WEBHOOK_RETRY_S": "0.2", "LIVE_WEBHOOK_POLL_S": "0.1",
           # a claim lapses 2 × timeout + 2 s after it was taken: 5 s here
           "LIVE_WEBHOOK_TIMEOUT_S": "1.5"}
    async with receiver() as rec:
        rec.hang = asyncio.Event()
        server = spawn_server(port, env)
        try:
            await wait_healthy(url, 60)
            async with Api(url) as api:
                s = await api.streamer()
                status, hook = await api.post("/api/webhooks", json={"url": rec.url, "events": ["room.live"]},
                                              token=s["token"])
                assert status == 201, hook
                room = await api.live_room(s["token"])  # committed with its outbox row
            # The server is sending it now (the receiver holds the request): kill it mid-send.
            await asyncio.wait_for(rec.entered.wait(), 30)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            rec.hang = None  # the held request stays held (its sender is dead); new ones answer 200
            assert rec.got == []
            server = spawn_server(port, env)
            await wait_healthy(url, 60)
            await rec.wait(lambda r: len(r.ok()) >= 1, timeout=30, what="the event after the restart")
            got = rec.ok()[0]
            assert got.type == "room.live" and got.body["data"]["room_id"] == room["id"]
            assert signing.verify(got.headers["X-Live-Signature"], got.raw, hook["secret"])
            async with Api(url) as api:
                (d,) = await deliveries_when(api, s["token"], hook["id"], lambda ds: ds[0]["status"] == "delivered")
                # The same delivery, sent again once the dead process's claim ran out.
                assert d["id"] == got.headers["X-Live-Delivery"] and d["status"] == "delivered"
        finally:
            stop_server(server)


async def test_a_thousand_events_arrive_complete_and_in_order_per_key(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """Throughput with the default poll interval: 1000 events over 50 orders to one endpoint,
    emitted in 20 transactions; prints events/s and the emit-to-arrival latency."""
    import time

    from live.core.ids import new_id
    from live.integrations.outbox import emit_many
    from tests.support import run_app
    from tests.webhook_support import FAST

    arrived: dict[str, float] = {}
    async with run_app(settings_factory(**{**FAST, "webhook_poll_s": 0.5})) as srv, Api(srv.url) as api, \
            receiver() as rec:
        rec.answer = lambda n, body: arrived.setdefault(body["id"], time.perf_counter()) and 200
        s = await api.streamer()
        shop = s["user"]["id"]
        status, hook = await api.post("/api/webhooks", json={"url": rec.url, "events": ["order.paid"]},
                                      token=s["token"])
        assert status == 201
        keys = [f"o{i}-{new_id()}" for i in range(50)]
        t0 = time.perf_counter()
        for batch in range(20):
            async with srv.services.db() as sess, sess.begin():
                await emit_many(sess, [("order.paid", shop, {"order": k, "n": batch}, k, None) for k in keys])
        await rec.wait(lambda r: len(r.ok()) == 1000, timeout=60, what="a thousand events")
        took = time.perf_counter() - t0
        for k in keys:
            assert [r.body["data"]["n"] for r in rec.ok() if r.body["data"]["order"] == k] == list(range(20))
        assert len({r.body["id"] for r in rec.ok()}) == 1000
        print(f"\n1000 webhook events in {took:.2f} s: {1000 / took:.0f}/s "
              f"(first after {min(arrived.values()) - t0:.2f} s)")
        await api.ok("DELETE", f"/api/webhooks/{hook['id']}", token=s["token"])
