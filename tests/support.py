"""Test support: a private redis-server, a database per session, the app on a free port,
and thin HTTP / Socket.IO clients. Everything is real: no fakes of Redis or SQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis
import socketio
from aiohttp import web

from live.app.factory import create_app
from live.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free port, in its own directory."""

    def __init__(self, appendonly: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="live-test-redis-"))
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not on PATH (apt-get install redis-server)"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir),
             "--appendonly", "yes" if self.appendonly else "no", "--maxclients", "20000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("test redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class TestDatabase:
    """SQLite in a temp dir by default; with LIVE_TEST_DATABASE_URL (PostgreSQL), a fresh
    database created for this test session and dropped after it."""

    __test__ = False  # not a test class, despite its name

    def __init__(self) -> None:
        self.base = os.environ.get("LIVE_TEST_DATABASE_URL", "")
        self.dir = Path(tempfile.mkdtemp(prefix="live-test-db-"))
        self.name = f"live_test_{uuid.uuid4().hex[:10]}"

    @property
    def is_postgres(self) -> bool:
        return self.base.startswith("postgresql")

    def url(self) -> str:
        if self.is_postgres:
            return self.base.rsplit("/", 1)[0] + "/" + self.name
        return f"sqlite+aiosqlite:///{self.dir / 'live.db'}"

    def _admin(self, sql: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        dsn = self.base.replace("postgresql+asyncpg", "postgresql")

        async def run() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(run())

    def create(self) -> None:
        if self.is_postgres:
            self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        if self.is_postgres:
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        shutil.rmtree(self.dir, ignore_errors=True)


def test_settings(redis_url: str, database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
    # Tests mint many guests and sign in often from one address: per-address limits stay out
    # of their way unless a test sets them (tests/test_bounds.py).
    for name, value in (("guest_rate_per_s", 1000.0), ("guest_rate_burst", 100000),
                        ("login_rate_per_s", 1000.0), ("login_rate_burst", 100000)):
        overrides.setdefault(name, value)
    return load_settings(env=env, redis_url=redis_url, database_url=database_url, data_dir=str(data_dir),
                         secret="test-secret-" + "x" * 20, admin_token="test-admin-token", port=0,
                         log_level="WARNING", **overrides)


@dataclass
class RunningServer:
    url: str
    settings: Settings
    app: web.Application
    runner: web.AppRunner

    @property
    def services(self) -> Any:
        from live.app.appkeys import SERVICES

        return self.app[SERVICES].get()


@contextlib.asynccontextmanager
async def run_app(settings: Settings) -> AsyncIterator[RunningServer]:
    """The app in this event loop, on a free port."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", settings, app, runner)
    finally:
        await runner.cleanup()


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        return str(self.body["error"]["code"])


@dataclass
class Api:
    """A small HTTP client: ``await api.post(path, json=..., token=...)`` → (status, body)."""

    base: str
    session: aiohttp.ClientSession = field(default=None)  # type: ignore[assignment]

    async def __aenter__(self) -> Api:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers, **kw) as r:
            ctype = r.headers.get("Content-Type", "")
            data = await r.json() if "json" in ctype else await r.read()
            return r.status, data

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        status, body = await self.request(method, path, **kw)
        if status >= 400:
            raise ApiError(status, body)
        return body

    async def guest(self, name: str = "viewer") -> dict[str, Any]:
        return await self.ok("POST", "/api/auth/guest", json={"name": name})

    async def streamer(self, username: str | None = None) -> dict[str, Any]:
        # Letters only: a random hex name can look like a phone number, which the guard refuses.
        username = username or "s_" + "".join(random.choices(string.ascii_lowercase, k=12))
        return await self.ok("POST", "/api/auth/register",
                             json={"username": username, "password": "correct horse", "role": "streamer"})

    async def live_room(self, streamer_token: str, title: str = "room") -> dict[str, Any]:
        room = await self.ok("POST", "/api/rooms", json={"title": title}, token=streamer_token)
        await self.ok("POST", f"/api/rooms/{room['id']}/live", token=streamer_token)
        return room


class SioClient:
    """A real python-socketio client that records every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self._waiters: list[tuple[str, asyncio.Future[Any]]] = []

        @self.sio.on("*")
        async def any_event(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            for name, fut in list(self._waiters):
                if name == event and not fut.done():
                    fut.set_result(data)
                    self._waiters.remove((name, fut))

    async def connect(self, url: str, token: str | None, transports: tuple[str, ...] = ("websocket",)) -> None:
        await self.sio.connect(url, auth={"token": token} if token is not None else None,
                               transports=list(transports), wait_timeout=10)

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    def received(self, event: str) -> list[Any]:
        return [d for e, d in self.events if e == event]

    async def wait_for(self, event: str, timeout: float = 5, where: Any = None) -> Any:
        """The first received payload of ``event`` (matching ``where``), waiting if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for d in self.received(event):
                if where is None or where(d):
                    return d
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiters.append((event, fut))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event} within {timeout}s; got {[e for e, _ in self.events]}")
            try:
                data = await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                raise TimeoutError(f"no {event} within {timeout}s; got {[e for e, _ in self.events]}") from None
            if where is None or where(data):
                return data

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


def stop_server(p: subprocess.Popen[bytes]) -> None:
    """Ctrl-C a spawned server; kill it if it has not exited within 20 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def spawn_server(port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    """``run_server.py`` as a real separate process (for multi-process and crash tests)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
    full.update(env)
    full.setdefault("LIVE_LOG_LEVEL", "WARNING")
    for name in ("LIVE_GUEST_RATE_PER_S", "LIVE_LOGIN_RATE_PER_S"):  # see test_settings
        full.setdefault(name, "1000")
    for name in ("LIVE_GUEST_RATE_BURST", "LIVE_LOGIN_RATE_BURST"):
        full.setdefault(name, "100000")
    return subprocess.Popen([sys.executable, str(ROOT / "run_server.py"), "--port", str(port), *extra],
                            env=full, cwd=str(ROOT))


async def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not healthy within {timeout}s")


def spawn_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``live worker`` (the background loops) as a real separate process; see ``wait_worker``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
    full.update(env)
    full.setdefault("LIVE_LOG_LEVEL", "WARNING")
    return subprocess.Popen([sys.executable, "-m", "live.ops.cli", "worker"], env=full, cwd=str(ROOT),
                            stdout=subprocess.PIPE)


async def wait_worker(p: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """The URL of a spawned worker's /healthz and /metrics, once it says it is ready."""
    assert p.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), timeout)
    assert b"live worker is ready" in line, line
    return line.decode().rsplit(" on ", 1)[1].rstrip(")\n")
