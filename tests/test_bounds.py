"""Bounded resources under abuse: slow consumers are dropped and their memory freed, sockets per
user and unauthenticated Engine.IO sessions are capped, guest minting and sign-ins are
throttled, and Argon2 runs in a bounded pool that cannot starve other work. Real clients,
real Redis, real SQL."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from live.core.settings import Settings
from tests.support import Api, RunningServer, SioClient, run_app

pytestmark = pytest.mark.timeout(180)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class NonReadingSocket:
    """A websocket client that signs in, joins a room, then never reads again — but keeps
    answering (sending pongs), as a stalled phone or a malicious client does. Its receive
    buffer is tiny, so what the server sends it piles up on the server's side."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    async def open(cls, host: str, port: int, token: str, room_id: str) -> NonReadingSocket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        self = cls(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += await loop.sock_recv(sock, 4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        assert (await self.read_text()).startswith("0")  # Engine.IO open
        await self.send("40" + orjson.dumps({"token": token}).decode())
        assert (await self.read_text()).startswith("40")
        await self.send("421" + orjson.dumps(["room:join", {"room_id": room_id}]).decode())
        while not (ack := await self.read_text()).startswith("431"):
            pass
        assert orjson.loads(ack[3:])[0]["ok"], ack
        return self

    async def read_text(self) -> str:
        loop = asyncio.get_running_loop()
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                off = 2
                if n == 126:
                    n, off = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127:
                    n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
                if len(self.buf) >= off + n:
                    payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
                    return payload.decode()
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    async def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        n = len(data)
        head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + masked)

    async def pong(self) -> bool:
        """Answer a ping without reading anything; False once the server has hung up."""
        try:
            await asyncio.wait_for(self.send("3"), 1)
            return True
        except (OSError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("n", [20, pytest.param(100, marks=pytest.mark.slow)])
async def test_slow_consumers_are_dropped_and_their_memory_freed(
        settings_factory: Callable[..., Settings], n: int) -> None:
    """A chatty room with ``n`` non-reading sockets (that still answer pings): each is dropped
    once what waits for it passes its send budget, server memory stays bounded, and a reader in
    the same room keeps getting everything in order."""
    budget = int(os.environ.get("LIVE_TEST_SEND_BUDGET", 256 * 1024))  # set huge to see it fail
    settings = settings_factory(socket_send_budget_bytes=budget, socket_send_budget_messages=100_000)
    async with run_app(settings) as srv, Api(srv.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        host, port = srv.url.removeprefix("http://").split(":")
        reader = SioClient()
        await reader.connect(srv.url, (await api.guest("reader"))["token"])
        assert (await reader.call("room:join", {"room_id": room["id"]}))["ok"]
        stalled = [await NonReadingSocket.open(host, int(port), (await api.guest(f"slow{i}"))["token"], room["id"])
                   for i in range(n)]
        sio = srv.services.pusher.sio
        base_dropped = sio.stats.slow_consumers_dropped
        rss0 = rss_bytes()
        peak = rss0
        text = "x" * 4000
        sent = 0
        dropped_at: float | None = None
        t0 = time.monotonic()
        # Chatty: 4 KB messages to the room until every stalled socket has been dropped (each got
        # far more than its budget offered), or 60 s.
        while time.monotonic() - t0 < 60:
            for _ in range(20):
                await srv.services.pusher.to_room(room["id"], "chat:message", {"room_id": room["id"], "text": text,
                                                                             "seq": sent})
                sent += 1
            await asyncio.sleep(0.02)
            if sent % 200 == 0:
                peak = max(peak, rss_bytes())
                await asyncio.gather(*(sock.pong() for sock in stalled))
            if sio.stats.slow_consumers_dropped - base_dropped >= n and dropped_at is None:
                dropped_at = time.monotonic()  # keep chatting a while: memory must stay where it is
            if dropped_at is not None and time.monotonic() - dropped_at > 3:
                break
        peak = max(peak, rss_bytes())
        dropped = sio.stats.slow_consumers_dropped - base_dropped
        try:
            assert dropped == n, (f"{dropped} of {n} slow consumers dropped after {sent} messages; "
                                  f"server grew {(peak - rss0) / 2**20:.0f} MB")
            # Each had ~sent*4 KB offered; far more than the budget, and more than would fit in memory.
            assert sent * 4000 > 4 * budget
            growth = peak - rss0
            print(f"{n} slow consumers all dropped; {sent} x 4 KB messages to the room over "
                  f"{time.monotonic() - t0:.1f} s; server RSS grew {growth / 2**20:.1f} MB")
            assert growth < 64 * 1024 * 1024, f"server grew {growth / 2**20:.0f} MB"
            # Their connections are gone (viewer count, sockets) and the reader is still served.
            for _ in range(100):
                if len(srv.services.pusher.sio.eio.sockets) == 1:
                    break
                await asyncio.sleep(0.1)
            assert len(srv.services.pusher.sio.eio.sockets) == 1
            got = reader.received("chat:message")
            assert reader.sio.connected and len(got) >= sent - 50
            assert [m["seq"] for m in got] == list(range(len(got)))  # in order, none lost
            status, metrics = await api.get("/metrics")
            assert f"live_socket_slow_consumers_dropped_total {float(sio.stats.slow_consumers_dropped)}".encode() \
                in metrics
        finally:
            for sock in stalled:
                sock.close()
            await reader.close()


async def test_sockets_per_user_are_capped(settings_factory: Callable[..., Settings]) -> None:
    async with run_app(settings_factory(socket_max_per_user=3)) as srv, Api(srv.url) as api:
        token = (await api.guest())["token"]
        clients = []
        for _ in range(3):
            c = SioClient()
            await c.connect(srv.url, token)
            clients.append(c)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(srv.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket")
            assert (await ws.receive_str()).startswith("0")
            await ws.send_str("40" + orjson.dumps({"token": token}).decode())
            refused = await ws.receive_str()
            await ws.close()
        assert refused.startswith("44"), refused  # Socket.IO CONNECT_ERROR
        assert orjson.loads(refused[2:])["data"]["code"] == "RATE_LIMITED"
        other = SioClient()
        await other.connect(srv.url, (await api.guest())["token"])  # another user is not affected
        await clients[0].close()
        for _ in range(50):  # a slot frees once one disconnects
            if sum(1 for w in srv.services.pusher.sio.eio.sockets.values() if not w.closed) <= 3:
                break
            await asyncio.sleep(0.1)
        again = SioClient()
        await again.connect(srv.url, token)
        for c in (*clients[1:], other, again):
            await c.close()
        status, metrics = await api.get("/metrics")
        assert b'live_limits_refused_total{limit="sockets_per_user"} 1.0' in metrics


async def test_unauthenticated_engineio_sessions_are_capped_and_timed_out(
        settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(socket_max_unauthenticated=5, socket_handshake_timeout_s=1.0)
    async with run_app(settings) as srv, aiohttp.ClientSession() as http:
        url = srv.url + "/socket.io/?EIO=4&transport=polling"
        for _ in range(5):
            async with http.get(url) as r:
                assert r.status == 200 and (await r.text()).startswith("0")
        async with http.get(url) as r:
            assert r.status == 401  # the sixth waits for nobody
        sio = srv.services.pusher.sio
        assert len(sio.pending) == 5
        for _ in range(50):  # none signed in: all closed after the handshake timeout
            if not sio.pending and not sio.eio.sockets:
                break
            await asyncio.sleep(0.1)
        assert not sio.pending and not sio.eio.sockets
        assert sio.stats.handshakes_timed_out == 5 and sio.stats.unauthenticated_refused == 1
        async with http.get(url) as r:
            assert r.status == 200
        # A client that signs in is no longer counted.
        async with Api(srv.url) as api:
            c = SioClient()
            await c.connect(srv.url, (await api.guest())["token"])
            assert len(sio.pending) == 1  # only the polling one above
            await asyncio.sleep(1.5)
            assert c.sio.connected
            await c.close()


async def test_guest_minting_is_throttled_per_address(settings_factory: Callable[..., Settings]) -> None:
    async with run_app(settings_factory(guest_rate_per_s=0.1, guest_rate_burst=5)) as srv, Api(srv.url) as api:
        statuses = [(await api.post("/api/auth/guest", json={"name": "g"}))[0] for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        status, body = await api.post("/api/auth/guest", json={"name": "g"})
        assert body["error"]["code"] == "RATE_LIMITED"
        # An operator (a moderator's token: the load tester) is not throttled.
        status, _ = await api.post("/api/auth/guest", json={"name": "g"}, token="test-admin-token")
        assert status == 200
        status, metrics = await api.get("/metrics")
        assert b'live_limits_refused_total{limit="guest_per_addr"}' in metrics


async def test_logins_are_throttled_per_account_and_per_address(settings_factory: Callable[..., Settings]) -> None:
    async def post(addr: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        # Loopback has all of 127/8: each address is another client to the server.
        conn = aiohttp.TCPConnector(local_addr=(addr, 0))
        async with aiohttp.ClientSession(connector=conn) as http, http.post(srv.url + path, json=payload) as r:
            return r.status, await r.json()

    async with run_app(settings_factory(login_rate_per_s=0.01, login_rate_burst=4)) as srv:
        for name in ("victim_1", "other_1"):
            status, _ = await post("127.0.0.3", "/api/auth/register", {"username": name, "password": "right-password"})
            assert status == 201
        wrong = {"username": "Victim_1", "password": "wrong-one"}
        codes = [(await post("127.0.0.1", "/api/auth/login", wrong))[1]["error"]["code"] for _ in range(5)]
        assert codes == ["UNAUTHORIZED"] * 4 + ["RATE_LIMITED"]
        # Per account: from another address, this account is throttled (even the right password) ...
        right = {"username": "victim_1", "password": "right-password"}
        status, body = await post("127.0.0.2", "/api/auth/login", right)
        assert (status, body["error"]["code"], body["error"]["limit"]) == (429, "RATE_LIMITED", "login_per_account")
        # ... while that address may still sign in to another account.
        status, body = await post("127.0.0.2", "/api/auth/login", {"username": "other_1", "password": "right-password"})
        assert status == 200 and body["user"]["name"] == "other_1"
        # Per address: the first address is throttled for every account.
        status, body = await post("127.0.0.1", "/api/auth/login", {"username": "other_1", "password": "right-password"})
        assert (status, body["error"]["limit"]) == (429, "login_per_addr")


async def test_password_hashing_is_bounded_and_starves_nothing(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(password_hash_workers=1, password_hash_queue=2)
    async with run_app(settings) as srv, Api(srv.url) as api:
        await api.ok("POST", "/api/auth/register", json={"username": "busy_user", "password": "right-password"})

        async def login() -> tuple[int, str]:
            status, body = await api.post("/api/auth/login", json={"username": "busy_user", "password": "x" * 8})
            return status, body["error"]["code"]

        storm = asyncio.gather(*(login() for _ in range(32)))
        await asyncio.sleep(0.05)
        # Meanwhile other work is served at once: a listing, and the shared thread pool.
        t0 = time.monotonic()
        await api.ok("GET", "/api/rooms")
        await asyncio.to_thread(time.sleep, 0)
        quick = time.monotonic() - t0
        results: list[Any] = await storm
        codes = sorted({code for _, code in results})
        assert codes == ["UNAUTHORIZED", "UNAVAILABLE"], results
        # Only about workers + queue are hashed at a time (how many in all depends on how the 32
        # requests spread over time on a busy machine); the rest are refused at once.
        assert sum(1 for _, c in results if c == "UNAVAILABLE") >= 8, results
        assert quick < 2.0, quick
        status, metrics = await api.get("/metrics")
        assert b'live_limits_refused_total{limit="password_hash_pool"}' in metrics
        assert b"live_password_hash_busy 0.0" in metrics


async def test_a_listing_is_served_while_slow_bodies_are_held(api: Api, server: RunningServer) -> None:
    """Slow-body connections cost a timer each; others are served meanwhile."""
    host, port = server.url.removeprefix("http://").split(":")
    writers = []
    for _ in range(50):
        _, w = await asyncio.open_connection(host, int(port))
        w.write(b"POST /api/auth/guest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{")
        writers.append(w)
    t0 = time.monotonic()
    await api.ok("GET", "/api/rooms")
    assert time.monotonic() - t0 < 1.0
    for w in writers:
        w.close()
