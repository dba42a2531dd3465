"""Stock fencing: Redis going back in time, rebuilds while buyers buy, strict durability, and
unknown ids that must create nothing. Real Redis, real SQL, the app on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from live.commerce.inventory import has_waitaof
from live.core import keys
from live.core.ids import new_id, now_ms
from live.core.models import Card, Order, Room, User
from live.ops.cli import _rebuild as cli_rebuild
from tests.flash_support import audit_once_persisted, list_card, rid, setup_sale
from tests.storm import Storm
from tests.support import (
    ROOT,
    Api,
    RedisServer,
    RunningServer,
    SioClient,
    free_port,
    run_app,
    spawn_server,
    stop_server,
    wait_healthy,
)
from tests.support import test_settings as make_settings
from tests.tcpproxy import TcpProxy


def card_key_names(card_id: str) -> list[str]:
    return [keys.card_state(card_id), keys.card_bought(card_id), keys.card_requests(card_id),
            keys.card_orders(card_id), keys.card_deadlines(card_id), keys.card_stream(card_id)]


async def snapshot(r: Any, card_id: str) -> dict[str, bytes | None]:
    """DUMP of every key of the card: what a backup of Redis holds for it."""
    return {k: await r.execute_command("DUMP", k, NEVER_DECODE=True) for k in card_key_names(card_id)}


async def restore(r: Any, snap: dict[str, bytes | None]) -> None:
    """Put the card back as the backup had it (keys the backup lacked disappear)."""
    for k, v in snap.items():
        await r.delete(k)
        if v is not None:
            await r.execute_command("RESTORE", k, 0, v)


async def buy(api: Api, token: str, card_id: str, qty: int = 1, req: str | None = None) -> tuple[int, Any]:
    return await api.post(f"/api/cards/{card_id}/buy", json={"qty": qty, "request_id": req or rid()}, token=token)


async def row_counts(srv: RunningServer) -> dict[str, int]:
    async with srv.services.db() as s:
        return {m.__tablename__: (await s.execute(select(func.count()).select_from(m))).scalar_one()
                for m in (Card, Order, Room, User)}


@pytest.fixture
async def prober_server(settings_factory: Any) -> Any:
    async with run_app(settings_factory(buy_rate_burst=1000, buy_rate_per_s=1000.0)) as srv:
        yield srv


async def test_unknown_card_ids_create_no_key_and_no_row(prober_server: RunningServer) -> None:
    server = prober_server
    async with Api(server.url) as api:
        await _probe(server, api)


async def _probe(server: RunningServer, api: Api) -> None:
    v = await api.guest("prober")
    r = server.services.redis
    # The buyer's own keys (its current-role cache, written at its first authorised request)
    # are the buyer's, not the unknown cards': made before counting.
    await api.ok("GET", "/api/me/orders", token=v["token"])
    await asyncio.sleep(0.3)  # let start-up loops write their keys first
    before_keys = {k async for k in r.scan_iter(count=1000)}
    before_rows = await row_counts(server)
    bogus = [new_id() for _ in range(200)]
    sem = asyncio.Semaphore(20)

    async def one(card_id: str) -> tuple[int, Any]:
        async with sem:
            return await buy(api, v["token"], card_id)

    for status, body in await asyncio.gather(*[one(c) for c in bogus]):
        assert status == 404 and body["error"]["code"] == "NOT_FOUND", body
    sio = SioClient()
    await sio.connect(server.url, v["token"])
    try:
        for c in bogus[:20]:
            ack = await sio.call("flash:buy", {"card_id": c, "qty": 1, "request_id": rid()})
            assert ack["error"]["code"] == "NOT_FOUND", ack
    finally:
        await sio.close()
    leftovers = [k async for k in r.scan_iter(match="*card:*") if any(b in k for b in bogus)]
    assert leftovers == []
    # Nothing keyed by a card appeared (the server's own background loops may write their keys
    # meanwhile: governance, webhooks and fans caches are not the unknown ids' doing).
    new_keys = {k async for k in r.scan_iter(count=1000)} - before_keys
    assert not [k for k in new_keys if "{card:" in k or "card" in k.split(":")[-1]], new_keys
    assert await row_counts(server) == before_rows
    assert all(server.services.flash.inventory.floors.get(c) is None for c in bogus)  # no memory kept either


async def test_redis_restored_from_an_older_copy_is_fenced_and_rebuilt(server: RunningServer, api: Api) -> None:
    s, room, card = await setup_sale(api, stock=10, limit_per_user=5)
    cid = card["id"]
    orders = server.services.orders
    r = server.services.redis
    a, b, c, d = [await api.guest(n) for n in "abcd"]
    assert (await buy(api, a["token"], cid, 2))[0] == 200
    await orders.flush()
    old = await snapshot(r, cid)  # the backup: 2 sold
    req_b = rid()
    status, first_b = await buy(api, b["token"], cid, 3, req_b)
    assert status == 200
    assert (await buy(api, c["token"], cid, 1))[0] == 200
    await orders.flush()  # 6 sold, all in SQL
    await restore(r, old)  # Redis goes back to "2 sold": left 8, and b's request unknown to it
    # The retry of a known request returns the order SQL holds, never a new one.
    status, again = await buy(api, b["token"], cid, 3, req_b)
    assert status == 200 and again["order"]["id"] == first_b["order"]["id"], again
    assert again["left"] == 4
    # And the stock is SQL's: 4 left, not 8.
    status, body = await buy(api, d["token"], cid, 5)
    assert body["error"]["code"] in ("LIMIT_EXCEEDED", "SOLD_OUT") and (await buy(api, d["token"], cid, 4))[0] == 200
    assert (await buy(api, s["token"], cid, 1))[1]["error"]["code"] in ("SOLD_OUT",)
    audit = await audit_once_persisted(api, cid, [first_b["order"]["id"]], s["token"], tries=25)
    assert audit["invariant_ok"], audit["problems"]
    assert audit["sold_in_sql"] == 10 and audit["oversold"] == 0 and audit["missing_order_ids"] == []
    assert server.services.metrics.rebuilds._value.get() >= 1


async def test_a_fresh_process_fences_a_stale_redis_from_sqls_seq(server: RunningServer, api: Api) -> None:
    """A process that never saw the card (floors empty) still refuses the stale counters: its
    first buy starts from SQL's seq."""
    s, room, card = await setup_sale(api, stock=4, limit_per_user=4)
    cid = card["id"]
    r = server.services.redis
    old = await snapshot(r, cid)
    v = await api.guest("v")
    assert (await buy(api, v["token"], cid, 3))[0] == 200
    await server.services.orders.flush()
    await restore(r, old)
    server.services.flash.inventory.floors.forget(cid)
    status, body = await buy(api, v["token"], cid, 2)
    assert body["error"]["code"] == "LIMIT_EXCEEDED", body  # SQL's 3 held, not the backup's 0
    w = await api.guest("w")
    assert (await buy(api, w["token"], cid, 2))[1]["error"]["code"] == "SOLD_OUT"
    assert (await buy(api, w["token"], cid, 1))[0] == 200


async def test_a_redis_connection_failure_triggers_the_fence_check_at_reconnect(settings_factory: Any) -> None:
    async with run_app(settings_factory(fence_check_interval_s=60.0)) as srv, Api(srv.url) as api:
        s, room, card = await setup_sale(api, stock=4, limit_per_user=4)
        cid = card["id"]
        r = srv.services.redis
        old = await snapshot(r, cid)
        v = await api.guest()
        assert (await buy(api, v["token"], cid, 2))[0] == 200
        await srv.services.orders.flush()
        await restore(r, old)  # Redis went back in time; the periodic check is a minute away
        rebuilds = srv.services.metrics.rebuilds
        before = rebuilds._value.get()
        srv.services.orders.redis_trouble()  # what a buy meeting a dropped connection reports
        for _ in range(100):
            if rebuilds._value.get() > before:
                break
            await asyncio.sleep(0.02)
        assert rebuilds._value.get() > before, "the fence check did not run after the connection failure"
        assert (await api.ok("GET", f"/api/cards/{cid}"))["left"] == 2


async def test_fenced_card_refuses_every_change_until_rebuilt(settings_factory: Any) -> None:
    async with run_app(settings_factory(fence_wait_s=0.3, fence_stale_s=1.0, fence_check_interval_s=0.2)) as srv, \
            Api(srv.url) as api:
        s, room, card = await setup_sale(api, stock=5, limit_per_user=3)
        cid = card["id"]
        v = await api.guest()
        _, first = await buy(api, v["token"], cid)
        inv = srv.services.flash.inventory
        assert (await inv.fence(cid, "someone-else", now_ms(), 60_000))[0] == "OK"
        status, body = await buy(api, v["token"], cid)
        assert status == 503 and body["error"]["code"] == "UNAVAILABLE"
        oid = first["order"]["id"]
        for path in (f"/api/orders/{oid}/pay", f"/api/orders/{oid}/cancel"):
            status, body = await api.post(path, token=v["token"])
            assert status == 503 and body["error"]["code"] == "UNAVAILABLE", (path, body)
        status, body = await api.post(f"/api/cards/{cid}/restock", json={"add": 1}, token=s["token"])
        assert status == 503, body
        # The rebuilder went silent: after fence_stale_s the fence check takes the rebuild over.
        for _ in range(100):
            status, body = await buy(api, v["token"], cid)
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200, body
        assert (await api.ok("POST", f"/api/orders/{oid}/pay", token=v["token"]))["status"] == "paid"
        audit = await audit_once_persisted(api, cid, [oid, body["order"]["id"]], s["token"], tries=25)
        assert audit["invariant_ok"] and audit["sold"] == 2, audit


async def test_rebuilds_racing_a_buy_storm_never_oversell(server: RunningServer, api: Api) -> None:
    s, room, card = await setup_sale(api, stock=120, limit_per_user=3)
    cid = card["id"]
    buyers = [await api.guest(f"b{i}") for i in range(60)]
    acked: list[str] = []

    async def tapper(token: str) -> None:
        for _ in range(4):
            status, body = await buy(api, token, cid)
            if status == 200:
                acked.append(body["order"]["id"])
            await asyncio.sleep(0)

    async def rebuilder() -> None:
        for _ in range(6):
            await server.services.orders.rebuild(cid, force=True)
            await asyncio.sleep(0.02)

    await asyncio.gather(*[tapper(b["token"]) for b in buyers], rebuilder())
    assert 0 < len(acked) <= 120
    audit = await audit_once_persisted(api, cid, acked, s["token"], tries=25)
    assert audit["missing_order_ids"] == [] and audit["oversold"] == 0 and audit["duplicate_orders"] == 0
    assert audit["invariant_ok"], audit["problems"]
    assert audit["sold_in_sql"] == len(acked)


def start_replica(primary_port: int, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server replicating the one on ``primary_port``."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--dir", str(directory), "--replicaof", "127.0.0.1", str(primary_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


async def wait_replica_synced(port: int, timeout: float = 15) -> None:
    r = redis.Redis(port=port, decode_responses=True)
    for _ in range(int(timeout / 0.05)):
        try:
            if r.info("replication").get("master_link_status") == "up":
                return
        except redis.ConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("replica did not sync")


async def test_strict_replica_mode_acknowledges_only_what_a_replica_has(settings_factory: Any, tmp_path: Path) -> None:
    primary = RedisServer()
    primary.start()
    replica = None
    try:
        settings = settings_factory(redis_url=primary.url, order_durability="replica",
                                    order_durability_timeout_ms=1000)
        async with run_app(settings) as srv, Api(srv.url) as api:
            s, room, card = await setup_sale(api, stock=3)
            v = await api.guest()
            req = rid()
            status, body = await buy(api, v["token"], card["id"], 1, req)
            assert status == 503 and "durable" in body["error"]["message"], body  # no replica: not acked
            replica, port = start_replica(primary.port, tmp_path)
            await wait_replica_synced(port)
            # The retry (as a client does after UNAVAILABLE): the same order, once the replica has
            # acknowledged it; a busy machine may need a second retry for the replica's ACK.
            for _ in range(5):
                status, body = await buy(api, v["token"], card["id"], 1, req)
                if status != 503:
                    break
            assert status == 200, body
            assert body["left"] == 2
            held = redis.Redis(port=port, decode_responses=True).hget(keys.card_orders(card["id"]), body["order"]["id"])
            assert held is not None
            assert srv.services.flash.inventory.durability == "replica"
    finally:
        if replica is not None:
            replica.kill()
            replica.wait(10)
        primary.stop()


async def test_disk_mode_uses_waitaof_or_falls_back_on_older_redis(settings_factory: Any) -> None:
    primary = RedisServer()
    primary.start()
    try:
        async with run_app(settings_factory(redis_url=primary.url)) as srv:
            inv = srv.services.flash.inventory
            r = srv.services.redis
            mode = await inv.configure_durability("disk", 1, 200)
            assert mode == ("disk" if await has_waitaof(r) else "fast")  # 7.0: no WAITAOF, fsync everysec
            await r.config_set("appendonly", "yes")
            await r.config_set("appendfsync", "always")
            assert await inv.configure_durability("disk", 1, 200) == "disk"
    finally:
        primary.stop()


# --- the must-show fault suite: real redis-server processes, a spawned server, storm clients ---
async def buyers(api: Api, n: int) -> list[dict[str, Any]]:
    """Guests as {"token", "user": {"id", ...}}: a test can retry a buyer's request later."""
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> dict[str, Any]:
        async with sem:
            return await api.guest(f"buyer{i}")

    return list(await asyncio.gather(*[one(i) for i in range(n)]))


class Sale:
    """A spawned server (``run_server.py``) selling one card; storms of real Socket.IO buyers."""

    def __init__(self, redis_url: str, database_url: str, data_dir: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"LIVE_REDIS_URL": redis_url, "LIVE_DATABASE_URL": database_url, "LIVE_DATA_DIR": str(data_dir),
                    "LIVE_SECRET": "fence-test-secret-" + "f" * 20, "LIVE_HEARTBEAT_INTERVAL_S": "0.5",
                    "LIVE_HEARTBEAT_DEAD_AFTER_S": "3", "LIVE_BUY_RATE_BURST": "1000", **(env or {})}
        self.proc = spawn_server(self.port, self.env, *extra)
        self.acks: list[dict[str, Any]] = []

    async def open(self, api: Api, stock: int, viewers: int, limit: int) -> None:
        await wait_healthy(self.url, 60)
        self.streamer = await api.streamer()
        room = await api.live_room(self.streamer["token"])
        self.card = await list_card(api, self.streamer["token"], room["id"], stock=stock, limit_per_user=limit)
        self.buyers = await buyers(api, viewers)

    def storm(self, taps: int, procs: int = 2) -> Storm:
        return Storm(self.url, self.card["id"], [b["token"] for b in self.buyers], procs=procs, taps=taps)

    async def storm_until_sold(self, api: Api, taps: int, sold: int) -> Storm:
        """Start a storm of ``taps`` per buyer; return once ``sold`` units are sold."""
        storm = self.storm(taps=taps)
        await storm.start()
        await self.wait_sold(api, sold)
        return storm

    async def sold(self, api: Api) -> int:
        status, c = await api.get(f"/api/cards/{self.card['id']}")
        return int(c["sold"]) if status == 200 else -1

    async def wait_sold(self, api: Api, n: int, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.sold(api) < n:
            assert asyncio.get_running_loop().time() < deadline, f"fewer than {n} sold in {timeout}s"
            await asyncio.sleep(0.05)

    async def retries_get_their_orders(self, api: Api, sample: int = 30) -> None:
        """A retry of a known request returns the order SQL holds, never a new one."""
        tokens = {b["user"]["id"]: b["token"] for b in self.buyers}
        for a in self.acks[::max(1, len(self.acks) // sample)]:  # spread: before and after the fault point
            for _ in range(50):  # UNAVAILABLE while the card is rebuilt: retry, as a client does
                status, body = await buy(api, tokens[a["user_id"]], self.card["id"], 1, a["request_id"])
                if status != 503:
                    break
                await asyncio.sleep(0.1)
            assert status == 200 and body["order"]["id"] == a["order_id"], (a, body)

    async def verdict(self, api: Api, exact: bool = True) -> dict[str, Any]:
        """Acknowledged units ≤ stock, every acknowledged order in SQL, the invariant holds; with
        ``exact``, also nothing sold without an ack (not so when Redis dies between a buy and its
        reply: that order exists, and its buyer's retry gets it)."""
        ids = [a["order_id"] for a in self.acks]
        assert len(set(ids)) == len(ids)
        audit = await audit_once_persisted(api, self.card["id"], ids, self.streamer["token"], tries=150)
        assert audit["missing_order_ids"] == [], f"{len(audit['missing_order_ids'])} acknowledged orders lost"
        assert len(ids) <= audit["stock"] and audit["oversold"] == 0, audit
        assert audit["duplicate_orders"] == 0 and audit["over_limit_users"] == 0, audit
        assert audit["invariant_ok"], audit["problems"]
        if exact:
            assert audit["sold_in_sql"] == len(ids), audit  # nothing sold that nobody was told about
        return audit

    def stop(self) -> None:
        stop_server(self.proc)


def kill9(rs: RedisServer) -> None:
    assert rs.proc is not None
    rs.proc.kill()
    rs.proc.wait(10)


@pytest.mark.slow
async def test_redis_restored_from_an_older_snapshot_mid_sale(database: Any, tmp_path: Path) -> None:
    rs = RedisServer()
    rs.start()
    sale = Sale(rs.url, database.url(), tmp_path / "data")
    try:
        async with Api(sale.url) as api:
            await sale.open(api, stock=300, viewers=120, limit=10)
            storm = await sale.storm_until_sold(api, taps=2, sold=60)
            rs.client().save()  # the backup, taken mid-storm
            shutil.copy(rs.dir / "dump.rdb", tmp_path / "backup.rdb")
            sale.acks += (await storm.results())["acks"]
            await audit_once_persisted(api, sale.card["id"], [], sale.streamer["token"], tries=100)
            # The operator restores the older backup: Redis forgets every sale since it.
            kill9(rs)
            shutil.copy(tmp_path / "backup.rdb", rs.dir / "dump.rdb")
            rs.start()
            await wait_healthy(sale.url, 30)
            await sale.retries_get_their_orders(api)
            storm = sale.storm(taps=3)
            await storm.start()
            sale.acks += (await storm.results())["acks"]
            audit = await sale.verdict(api)
            assert audit["sold_in_sql"] > 240  # the second storm sold from SQL's numbers
    finally:
        sale.stop()
        rs.stop()


@pytest.mark.slow
async def test_redis_killed_mid_storm_loses_no_ack(database: Any, tmp_path: Path) -> None:
    """kill -9 of redis-server mid-storm, restarted from its AOF, the server in ``disk`` mode (on
    Redis 7.0, without WAITAOF, honoured through appendfsync always). A killed *process* loses
    nothing written to its AOF in any mode (the kernel has it); what ``disk`` adds — surviving a
    machine crash — no test here can show."""
    rs = RedisServer(appendonly=True)
    rs.start()
    rs.client().config_set("appendfsync", "always")
    sale = Sale(rs.url, database.url(), tmp_path / "data", env={"LIVE_ORDER_DURABILITY": "disk"})
    try:
        async with Api(sale.url) as api:
            await sale.open(api, stock=300, viewers=120, limit=10)
            storm = await sale.storm_until_sold(api, taps=4, sold=80)
            kill9(rs)  # mid-storm
            rs.start()  # from its AOF
            rs.client().config_set("appendfsync", "always")
            sale.acks += (await storm.results())["acks"]
            await wait_healthy(sale.url, 30)
            await sale.retries_get_their_orders(api)
            await sale.verdict(api, exact=False)
    finally:
        sale.stop()
        rs.stop()


@pytest.mark.slow
async def test_lagging_replica_promoted_mid_storm(database: Any, tmp_path: Path) -> None:
    primary = RedisServer()
    primary.start()
    # The replica replicates through a proxy the test cuts: a replication link that lags.
    link = TcpProxy("127.0.0.1", primary.port, free_port())
    await link.start()
    replica, rport = start_replica(link.port, tmp_path)
    front = TcpProxy("127.0.0.1", primary.port, free_port())  # what the server dials (DNS / a VIP)
    await front.start()
    sale = Sale(f"redis://127.0.0.1:{front.port}/0", database.url(), tmp_path / "data")
    try:
        await wait_replica_synced(rport)
        async with Api(sale.url) as api:
            await sale.open(api, stock=300, viewers=120, limit=10)
            storm = await sale.storm_until_sold(api, taps=2, sold=40)
            await link.cut()  # from here the replica falls behind; the primary keeps selling
            sale.acks += (await storm.results())["acks"]
            await audit_once_persisted(api, sale.card["id"], [], sale.streamer["token"], tries=100)
            # Failover: the primary dies, the lagging replica is promoted, traffic moves to it.
            await front.cut()
            kill9(primary)
            redis.Redis(port=rport).execute_command("REPLICAOF", "NO", "ONE")
            front.target = ("127.0.0.1", rport)
            await front.restore()
            await sale.retries_get_their_orders(api)
            storm = sale.storm(taps=3)
            await storm.start()
            sale.acks += (await storm.results())["acks"]
            audit = await sale.verdict(api)
            assert audit["sold_in_sql"] > 240
    finally:
        sale.stop()
        replica.kill()
        replica.wait(10)
        await front.cut()
        await link.cut()
        primary.stop()


@pytest.mark.slow
async def test_live_rebuild_during_a_storm_on_two_workers(redis_server: RedisServer, database: Any,
                                                         tmp_path: Path) -> None:
    sale = Sale(redis_server.url, database.url(), tmp_path / "data", "--workers", "2")
    stock = 3000
    try:
        async with Api(sale.url) as api:
            await sale.open(api, stock=stock, viewers=0, limit=30)
            selling = True
            found: list[int] = []  # ``left`` each rebuild found when it fenced the card

            def record(stdout: str) -> None:
                m = re.search(r"\(found left (\d+)", stdout)  # absent: another run held the fence
                if m:
                    found.append(int(m.group(1)))

            async def operator(delay: float) -> None:
                # `live rebuild` as a separate process (it takes seconds to start on a busy machine)...
                await asyncio.sleep(delay)
                while selling:
                    out = await asyncio.to_thread(live_cli, sale.env, "rebuild", sale.card["id"])
                    assert "rebuilt card" in out.stdout, out.stdout + out.stderr
                    record(out.stdout)

            async def operator_in_process() -> None:
                # ...and the same command's code in this process, back to back, so that rebuilds
                # surely land mid-storm.
                settings = make_settings(sale.env["LIVE_REDIS_URL"], sale.env["LIVE_DATABASE_URL"], tmp_path / "data")
                await sale.wait_sold(api, 1)
                while selling:
                    with contextlib.redirect_stdout(io.StringIO()) as out:
                        await cli_rebuild(settings, sale.card["id"])
                    record(out.getvalue())
                    await asyncio.sleep(0.02)

            operators = [asyncio.ensure_future(operator(0)), asyncio.ensure_future(operator_in_process())]
            sale.buyers = await buyers(api, 250)
            storm = sale.storm(taps=16)
            await storm.start()
            sale.acks += (await storm.results())["acks"]
            selling = False
            await asyncio.gather(*operators)
            audit = await sale.verdict(api)
            assert audit["sold_in_sql"] > stock // 2, audit  # buyers waited out the fences, mostly
            assert any(0 < left < stock for left in found), f"no rebuild while the card sold: {found}"
    finally:
        sale.stop()


def live_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
    full.update(env, LIVE_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "live", *args], env=full, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=60)
