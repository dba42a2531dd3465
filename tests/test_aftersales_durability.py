"""kill -9 of a server in the middle of a wave of refunds: nothing lost, nothing applied twice."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from live.core.models import Order
from tests.aftersales_support import eventually, new_sale, paid_order
from tests.support import Api, RedisServer, TestDatabase, free_port, spawn_server, stop_server, wait_healthy

pytestmark = pytest.mark.slow


async def test_kill_9_mid_refund_wave_loses_nothing_and_refunds_once(redis_server: RedisServer,
                                                                   database: TestDatabase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(),
           "LIVE_DATA_DIR": str(tmp_path / "data"), "LIVE_SECRET": "kill-test-secret-" + "z" * 20,
           # a dead process is recognised (and what it had not persisted claimed) quickly
           "LIVE_HEARTBEAT_INTERVAL_S": "0.5", "LIVE_HEARTBEAT_DEAD_AFTER_S": "2",
           "LIVE_PERSISTER_CLAIM_IDLE_MS": "2000", "LIVE_BUY_RATE_PER_S": "1000", "LIVE_BUY_RATE_BURST": "1000"}
    n = 120
    server = spawn_server(port, env)
    try:
        await wait_healthy(url, 60)
        async with Api(url) as api:
            sale = await new_sale(api, stock=n, price="12.34")
            orders: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for _ in range(0, n, 20):
                orders += await asyncio.gather(*(paid_order(api, sale) for _ in range(20)))
            answered: dict[str, int] = {}

            async def cancel(buyer: dict[str, Any], order: dict[str, Any]) -> None:
                try:
                    st, _ = await api.post(f"/api/orders/{order['id']}/cancel", token=buyer["token"])
                    answered[order["id"]] = st
                except (TimeoutError, aiohttp.ClientError):
                    pass  # the server died under this request: retried after the restart

            wave = [asyncio.ensure_future(cancel(b, o)) for b, o in orders]
            await eventually(lambda: asyncio.sleep(0, len(answered) >= n // 4), timeout=30, every=0.005)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            await asyncio.gather(*wave)
        refunded_acked = [oid for oid, st in answered.items() if st == 200]
        assert 0 < len(refunded_acked) < n, f"{len(refunded_acked)} of {n} refunds acknowledged before the kill"

        server = spawn_server(port, env)
        await wait_healthy(url, 60)
        async with Api(url) as api:
            # The buyers whose cancel got no answer try again: a refund already made answers
            # CONFLICT (the order is refunded), one not yet made is made now, once.
            for buyer, order in orders:
                if answered.get(order["id"]) != 200:
                    st, body = await api.post(f"/api/orders/{order['id']}/cancel", token=buyer["token"])
                    assert st == 200 or (st == 409 and body["error"]["status"] == "refunded"), body

            async def settled() -> dict[str, Any] | None:
                audit: dict[str, Any] = await api.ok("POST", f"/api/cards/{sale.card['id']}/audit",
                                                     json={"order_ids": [o["id"] for _, o in orders]},
                                                     token=sale.token)
                return audit if audit["pending_persist"] == 0 and audit["invariant_ok"] else None

            audit = await eventually(settled, timeout=40, every=0.3)
            assert audit["missing_order_ids"] == [] and audit["left"] == n and audit["sold_in_sql"] == 0
    finally:
        stop_server(server)
    # SQL: every order refunded exactly once, in exact cents.
    engine = create_async_engine(database.url())
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Order.id, Order.status, Order.paid_amount_cents,
                                              Order.refunded_amount_cents, Order.stock_returned)
                                       .where(Order.card_id == sale.card["id"]))).all()
    finally:
        await engine.dispose()
    assert len(rows) == n
    for r in rows:
        assert (r.status, r.paid_amount_cents, r.refunded_amount_cents, r.stock_returned) == (
            "refunded", 1234, 1234, True), r


async def test_pushes_reach_buyer_and_streamer_on_other_processes(redis_server: RedisServer,
                                                                 database: TestDatabase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The streamer ships and approves on one process; the buyer, connected to another, and the
    streamer's own socket on a third are told (order:update, aftersale:update)."""
    from tests.aftersales_support import paid_order
    from tests.support import SioClient

    ports = [free_port() for _ in range(3)]
    env = {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(),
           "LIVE_DATA_DIR": str(tmp_path / "data"), "LIVE_SECRET": "push-test-secret-" + "q" * 20}
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = [spawn_server(ports[0], env)]
    buyer_sock, streamer_sock = SioClient(), SioClient()
    try:
        await wait_healthy(urls[0], 60)  # the first migrates a fresh database; then the others
        procs += [spawn_server(p, env) for p in ports[1:]]
        for u in urls[1:]:
            await wait_healthy(u, 60)
        async with Api(urls[0]) as api:
            sale = await new_sale(api)
            buyer, order = await paid_order(api, sale)
        await buyer_sock.connect(urls[1], buyer["token"])
        await streamer_sock.connect(urls[2], sale.token)
        async with Api(urls[0]) as api:
            await api.ok("POST", f"/api/orders/{order['id']}/ship", json={"carrier": "SF", "tracking_no": "SF9"},
                         token=sale.token)
            case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales",
                                json={"kind": "refund_only", "reason": "dented"}, token=buyer["token"])
            await api.ok("POST", f"/api/after-sales/{case['id']}/approve", token=sale.token)
        for sock in (buyer_sock, streamer_sock):
            shipped = await sock.wait_for("order:update", timeout=10, where=lambda d: d["status"] == "shipped")
            assert shipped["shipment"]["tracking_no"] == "SF9"
            await sock.wait_for("aftersale:update", timeout=10, where=lambda d: d["status"] == "requested")
            await sock.wait_for("aftersale:update", timeout=10, where=lambda d: d["status"] == "refunded")
            refunded = await sock.wait_for("order:update", timeout=10, where=lambda d: d["status"] == "refunded")
            assert refunded["refunded_amount"] == order["amount"] and not refunded["stock_returned"]
    finally:
        await buyer_sock.close()
        await streamer_sock.close()
        for p in procs:
            stop_server(p)
