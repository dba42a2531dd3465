"""The server on a real 3-node Redis Cluster: every script's keys share a slot, and a sale,
the order persister, chat and cross-process notices (bus) work."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from live.core import keys
from tests.flash_support import list_card
from tests.storm import Storm, make_viewers
from tests.support import Api, SioClient, run_app

pytestmark = pytest.mark.slow


def cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _ping(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=None).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="live-cluster-"))
    ports: list[int] = []
    while len(ports) < 3:
        p = cluster_port()
        if p not in ports:
            ports.append(p)
    procs = []
    for p in ports:
        (base / str(p)).mkdir()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{p}.conf", "--dir", str(base / str(p)), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for p, pr in zip(ports, procs, strict=True):
            deadline = time.monotonic() + 10
            while not _ping(p):
                assert pr.poll() is None, f"cluster node on port {p} exited with {pr.returncode}"
                assert time.monotonic() < deadline, f"cluster node on port {p} did not answer"
                time.sleep(0.05)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for _ in range(100):
            if b"cluster_state:ok" in redis.Redis(host="127.0.0.1", port=ports[0]).execute_command("CLUSTER INFO"):
                break
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            pr.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def test_each_scripts_keys_share_one_slot() -> None:
    from redis.crc import key_slot

    card_keys = [keys.card_state("c1"), keys.card_bought("c1"), keys.card_requests("c1"), keys.card_orders("c1"),
                 keys.card_deadlines("c1"), keys.card_stream("c1"), keys.card_dead("c1"), keys.card_tick("c1")]
    assert len({key_slot(k.encode()) for k in card_keys}) == 1
    room_keys = [keys.room_users("r1"), keys.room_proc_users("r1", "p1"), keys.room_tick("r1", "v"),
                 keys.room_version("r1"), keys.room_chat("r1"), keys.room_banned("r1")]
    assert len({key_slot(k.encode()) for k in room_keys}) == 1


async def test_sale_chat_and_bus_on_a_cluster(cluster: str, settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(redis_url=cluster, redis_cluster=True)
    async with run_app(settings) as srv, Api(srv.url) as api:
        assert (await api.ok("GET", "/healthz"))["status"] == "ok"
        s = await api.streamer()
        room = await api.live_room(s["token"])
        card = await list_card(api, s["token"], room["id"], stock=50, limit_per_user=1)
        tokens = await make_viewers(api, 120)
        storm = Storm(srv.url, card["id"], tokens, procs=2, taps=1)
        await storm.start()
        res = await storm.results()
        acked = [a["order_id"] for a in res["acks"]]
        assert len(acked) == 50, res["errors"]
        audit = await api.ok("POST", f"/api/cards/{card['id']}/audit", json={"order_ids": acked}, token=s["token"])
        assert audit["missing_order_ids"] == [] and audit["oversold"] == 0 and audit["invariant_ok"], audit
        # the sold-out hint travelled over the bus (pub/sub) back to this process
        for _ in range(50):
            if srv.services.flash.unavailable.get(card["id"]) == "sold_out":
                break
            await asyncio.sleep(0.05)
        assert srv.services.flash.unavailable.get(card["id"]) == "sold_out"
        # chat, and a ban that kicks through the bus
        viewer = await api.guest("cv")
        c = SioClient()
        await c.connect(srv.url, viewer["token"])
        try:
            assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
            ack = await c.call("chat:send", {"room_id": room["id"], "text": "好看!"})
            assert ack["ok"], ack
            await api.ok("POST", f"/api/rooms/{room['id']}/ban", json={"user_id": viewer["user"]["id"]},
                         token=s["token"])
            assert (await c.wait_for("room:kicked", timeout=5))["room_id"] == room["id"]
        finally:
            await c.close()
