"""Several server processes on one Redis: counts, fan-out, a process killed with -9, workers, Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.flash_support import list_card
from tests.support import Api, RedisServer, SioClient, TestDatabase, free_port, spawn_server, stop_server, wait_healthy
from tests.test_durability import redis_servers_in

pytestmark = pytest.mark.slow


async def test_two_processes_share_counts_fanout_and_drop_a_killed_ones_viewers(
        redis_server: RedisServer, database: TestDatabase) -> None:
    data = tempfile.mkdtemp(prefix="live-mp-")
    env = {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(), "LIVE_DATA_DIR": data,
           "LIVE_SECRET": "multi-process-secret-" + "z" * 20, "LIVE_HEARTBEAT_INTERVAL_S": "0.5",
           "LIVE_HEARTBEAT_DEAD_AFTER_S": "3", "LIVE_VIEWERS_PUSH_INTERVAL_S": "0.2"}
    ports = [free_port(), free_port()]
    procs = [spawn_server(p, env) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    clients: list[SioClient] = []
    try:
        await asyncio.gather(*[wait_healthy(u, 60) for u in urls])
        async with Api(urls[0]) as api:
            s = await api.streamer()
            room = await api.live_room(s["token"])
            people = [await api.guest(f"p{i}") for i in range(5)]
            # p0..p2 on process A, p3 and p4 on B; p0 also opens a tab on B (counts once)
            placement = [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (0, 1)]
            for who, proc in placement:
                c = SioClient()
                await c.connect(urls[proc], people[who]["token"])
                assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
                clients.append(c)
            assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 5
            # a card listed through A reaches viewers on B (Socket.IO through Redis)
            card = await list_card(api, s["token"], room["id"], stock=3)
            for c in clients:
                assert (await c.wait_for("flash:card", timeout=5))["id"] == card["id"]
            # kill -9 process A: its viewers (p1, p2; p0 still has a tab on B) leave the count
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            t0 = time.monotonic()
        async with Api(urls[1]) as api:
            while time.monotonic() - t0 < 30:
                if (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 3:
                    break
                await asyncio.sleep(0.2)
            took = time.monotonic() - t0
            assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 3, "dead process not reaped"
            assert took < 10
            # and the survivors were told
            await clients[3].wait_for("room:viewers", timeout=5, where=lambda d: d["viewers"] == 3)
    finally:
        for c in clients[3:]:
            await c.close()
        for p in procs:
            stop_server(p)


async def test_workers_share_one_port(redis_server: RedisServer, database: TestDatabase) -> None:
    data = tempfile.mkdtemp(prefix="live-workers-")
    port = free_port()
    env = {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(), "LIVE_DATA_DIR": data}
    sup = spawn_server(port, env, "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, 60)
        async with Api(url) as api:
            s = await api.streamer()
            room = await api.live_room(s["token"])
            clients = []
            for i in range(6):  # spread over the workers by the kernel
                c = SioClient()
                await c.connect(url, (await api.guest(f"w{i}"))["token"])
                assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
                clients.append(c)
            assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 6
            card = await list_card(api, s["token"], room["id"], stock=2)
            for c in clients:
                assert (await c.wait_for("flash:card", timeout=5))["id"] == card["id"]
            for c in clients:
                await c.close()
            pids = {int(line.split()[0]) for line in subprocess.run(
                ["pgrep", "-P", str(sup.pid), "-a"], capture_output=True, text=True).stdout.splitlines()
                if "live.app.main" in line}  # the serving processes, not the background worker
            assert len(pids) == 2, "expected two serving processes"
    finally:
        stop_server(sup)


async def test_embedded_defaults_serve_and_ctrl_c_leaves_no_redis() -> None:
    data = Path(tempfile.mkdtemp(prefix="live-embedded-")).resolve()
    port = free_port()
    t0 = time.monotonic()
    p = spawn_server(port, {"LIVE_DATA_DIR": str(data)})
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", 60)
        assert time.monotonic() - t0 < 60
        assert len(redis_servers_in(data)) == 1
        assert (data / "redis" / "appendonlydir").exists() or list((data / "redis").glob("*.aof*"))
        assert (data / "live.db").exists()
    finally:
        p.send_signal(signal.SIGINT)  # Ctrl-C
        p.wait(30)
    assert redis_servers_in(data) == []
