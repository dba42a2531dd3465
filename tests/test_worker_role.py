"""Serving processes without background loops (``--no-background``) and ``live worker``
processes beside them, all real processes on one private Redis and one database."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from live.core import db as dbmod
from live.core.models import Order
from tests.flash_support import audit_once_persisted, list_card, rid
from tests.storm import Storm, make_viewers
from tests.support import (
    Api,
    RedisServer,
    SioClient,
    TestDatabase,
    free_port,
    spawn_server,
    spawn_worker,
    stop_server,
    wait_healthy,
    wait_worker,
)

# Every test starts two to four real processes (about 30-50 s each on a busy machine).
pytestmark = pytest.mark.slow


def split_env(redis_server: RedisServer, database: TestDatabase, **extra: str) -> dict[str, str]:
    return {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(),
            "LIVE_DATA_DIR": tempfile.mkdtemp(prefix="live-split-"), "LIVE_SECRET": "split-test-secret-" + "z" * 20,
            # a killed process is recognised (its pending stream entries claimed) after 3 s
            "LIVE_HEARTBEAT_INTERVAL_S": "0.5", "LIVE_HEARTBEAT_DEAD_AFTER_S": "3",
            "LIVE_SWEEPER_INTERVAL_S": "0.2", **extra}


async def until(cond: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.json()


class Procs:
    """Spawned servers and workers, all stopped at the end of the test."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.all: list[subprocess.Popen[bytes]] = []

    async def serving(self) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        p = spawn_server(port, self.env, "--no-background")
        self.all.append(p)
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, 60)
        return p, url

    async def worker(self) -> tuple[subprocess.Popen[bytes], str]:
        p = spawn_worker(self.env)
        self.all.append(p)
        return p, await wait_worker(p)

    def stop(self) -> None:
        for p in self.all:
            stop_server(p)


@pytest.fixture
async def procs(redis_server: RedisServer, database: TestDatabase) -> AsyncIterator[Procs]:
    ps = Procs(split_env(redis_server, database, LIVE_PAYMENT_TIMEOUT_S="1.5"))
    try:
        yield ps
    finally:
        ps.stop()


async def sql_orders(database: TestDatabase, order_ids: list[str]) -> int:
    engine = dbmod.make_engine(database.url())
    try:
        async with dbmod.make_sessionmaker(engine)() as s:
            return int((await s.execute(select(func.count()).select_from(Order)
                                        .where(Order.id.in_(order_ids)))).scalar_one())
    finally:
        await engine.dispose()


async def test_a_serving_process_leaves_its_orders_to_the_worker_which_persists_them(
        procs: Procs, database: TestDatabase) -> None:
    _, url = await procs.serving()
    status, health = await get_json(url + "/healthz")
    # No persister here, and no worker yet: still healthy (it serves), and it says so.
    assert status == 200 and health["background"] == {"in_process": False, "workers_alive": 0}, health
    async with Api(url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        card = await list_card(api, s["token"], room["id"], stock=5)
        buyer = SioClient()
        await buyer.connect(url, (await api.guest("b"))["token"])
        try:
            ack = await buyer.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()})
            assert ack["ok"], ack
            order_id = ack["order"]["id"]
            await asyncio.sleep(1.5)
            assert await sql_orders(database, [order_id]) == 0, "a serving process without loops persisted"

            worker, ops = await procs.worker()

            async def persisted() -> bool:
                return await sql_orders(database, [order_id]) == 1

            await until(persisted, 20, "the worker to persist the order")
            status, wh = await get_json(ops + "/healthz")
            assert status == 200 and wh["role"] == "worker" and wh["checks"]["order_persister"], wh
            status, health = await get_json(url + "/healthz")
            assert health["background"]["workers_alive"] == 1, health
            stop_server(worker)  # a clean stop leaves the set at once
            assert worker.returncode == 0
            status, health = await get_json(url + "/healthz")
            assert health["background"]["workers_alive"] == 0, health
        finally:
            await buyer.close()


async def test_an_expiry_by_one_of_two_workers_reaches_the_buyer_on_a_serving_process_once(procs: Procs) -> None:
    _, url = await procs.serving()
    await procs.worker()
    await procs.worker()
    async with Api(url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        card = await list_card(api, s["token"], room["id"], stock=3, limit_per_user=2)
        buyer, viewer = SioClient(), SioClient()
        await buyer.connect(url, (await api.guest("b"))["token"])
        await viewer.connect(url, (await api.guest("v"))["token"])
        try:
            assert (await viewer.call("room:join", {"room_id": room["id"]}))["ok"]
            ack = await buyer.call("flash:buy", {"card_id": card["id"], "qty": 2, "request_id": rid()})
            assert ack["ok"], ack
            order_id = ack["order"]["id"]
            # Unpaid past its 1.5 s window: a worker's sweeper expires it and pushes through Redis.
            expired = await buyer.wait_for("order:update", timeout=15,
                                           where=lambda d: d["id"] == order_id and d["status"] == "expired")
            assert expired["qty"] == 2
            # The stock comes back to the room's viewers (the worker's coalesced flash:stock push).
            await viewer.wait_for("flash:stock", timeout=10, where=lambda d: d["card_id"] == card["id"]
                                  and d["left"] == 3)
            await asyncio.sleep(1.5)  # time for a second sweeper to fire twice, if it could
            pushes = [d for d in buyer.received("order:update") if d["id"] == order_id and d["status"] == "expired"]
            assert len(pushes) == 1, pushes
            got = await api.ok("GET", f"/api/cards/{card['id']}")
            assert got["left"] == 3, got
        finally:
            await buyer.close()
            await viewer.close()


async def test_kill_9_of_the_worker_and_of_a_serving_process_mid_storm_loses_no_acked_order(
        redis_server: RedisServer, database: TestDatabase) -> None:
    ps = Procs(split_env(redis_server, database))
    try:
        victim, url = await ps.serving()
        _, survivor_url = await ps.serving()
        worker, _ = await ps.worker()
        async with Api(survivor_url) as api:
            s = await api.streamer()
            room = await api.live_room(s["token"])
            card = await list_card(api, s["token"], room["id"], stock=2000, limit_per_user=10)
            tokens = await make_viewers(api, 200)
            storm = Storm(url, card["id"], tokens, procs=2, taps=10)
            await storm.start()

            async def sold(n: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    status, c = await api.get(f"/api/cards/{card['id']}")
                    return status == 200 and c["sold"] > n
                return check

            # The worker dies while it persists the storm; then the serving process taking it.
            await until(await sold(len(tokens) // 2), 60, "a first round of acks")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            await until(await sold(len(tokens)), 60, "buyers to tap again")
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            res = await storm.results()
            acked = [a["order_id"] for a in res["acks"]]
            assert len(acked) > len(tokens), res["errors"]
            # A new worker claims what the dead one had read but not written (its heartbeat goes
            # stale after 3 s) and persists the rest; SQL and Redis agree.
            await ps.worker()
            audit = await audit_once_persisted(api, card["id"], acked, s["token"], tries=150)
            assert audit["missing_order_ids"] == [], f"{len(audit['missing_order_ids'])} acked orders lost"
            assert audit["oversold"] == 0 and audit["duplicate_orders"] == 0 and audit["over_limit_users"] == 0
            assert audit["invariant_ok"], audit["problems"]
            assert await sql_orders(database, acked) == len(acked)
    finally:
        ps.stop()


async def test_workers_flag_runs_serving_processes_and_one_worker_and_restarts_a_dead_one(
        redis_server: RedisServer, database: TestDatabase) -> None:
    port = free_port()
    env = split_env(redis_server, database)
    sup = spawn_server(port, env, "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, 90)

        def children() -> dict[int, str]:
            out = subprocess.run(["pgrep", "-P", str(sup.pid), "-a"], capture_output=True, text=True).stdout
            return {int(line.split()[0]): line for line in out.splitlines()}

        kids = children()
        workers = [pid for pid, cmd in kids.items() if "live.ops.cli" in cmd and " worker" in cmd]
        serving = [pid for pid, cmd in kids.items() if "live.app.main" in cmd]
        assert len(workers) == 1 and len(serving) == 2, kids
        # A serving process can answer before the worker's first heartbeat: wait for it, then
        # the count must be exactly one.
        async def worker_seen() -> bool:
            _, h = await get_json(url + "/healthz")
            return bool(h["background"]["workers_alive"])

        await until(worker_seen, 30, "the worker's first heartbeat")
        status, health = await get_json(url + "/healthz")
        assert health["background"] == {"in_process": False, "workers_alive": 1}, health
        subprocess.run(["kill", "-9", str(workers[0])], check=True)

        async def restarted() -> bool:
            return any("live.ops.cli" in cmd and pid != workers[0] for pid, cmd in children().items())

        await until(restarted, 20, "the supervisor to restart the worker")
    finally:
        stop_server(sup)
    assert sup.returncode == 0
