"""Processes under test: a private redis-server, the project server, the Node.js reference;
and what the kernel says about them (CPU ticks, RSS) and about the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _node_src() -> Path:
    """``shared/peers/node-socketio`` beside the checkout, or beside the folder holding it (a
    git worktree sits one level deeper than the main checkout)."""
    for base in ROOT.parents:
        candidate = base / "shared" / "peers" / "node-socketio"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "peers" / "node-socketio"


NODE_SRC = _node_src()
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/PID/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; fields are counted after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size (``VmRSS`` of ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker_role_available() -> bool:
    """Whether this checkout has the ``live worker`` role (serving processes without loops)."""
    from live.core.settings import Settings

    return "background_loops" in Settings.model_fields


def machine() -> dict[str, str | int | float]:
    """nproc, CPU model, RAM, kernel, Python, Node and Redis versions."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    return {"nproc": os.cpu_count() or 0, "cpu": model or platform.processor(), "ram_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "node": version(["node", "--version"]),
            "redis": version(["redis-server", "--version"])}


@dataclass
class Proc:
    """A started process and where it listens."""

    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log: Path
    # The project's background worker (``live worker``) serving this process's orders, if any.
    worker: Proc | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        """SIGINT, then SIGKILL after 15 s (this process only)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def wait_http(url: str, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy within {timeout}s")


class Stack:
    """A private Redis, the project server and the Node reference on it; all stopped on exit."""

    def __init__(self, workdir: Path | None = None, manager: str = "auto") -> None:
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="live-bench-"))
        self.manager = manager
        self.procs: list[Proc] = []
        self.redis_port = 0

    def start_redis(self) -> str:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not on PATH")
        self.redis_port = free_port()
        rdir = self.dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "redis.log"
        p = subprocess.Popen([exe, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(rdir), "--maxclients", "20000"],
                             stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.procs.append(Proc("redis", p, f"redis://127.0.0.1:{self.redis_port}/0", log))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.redis_port), 0.2):
                return self.procs[-1].url
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def start_project(self, redis_url: str, split: bool = False, **env: str) -> Proc:
        """``run_server.py`` on a free port with ``LIVE_REDIS_URL`` and a temp ``LIVE_DATA_DIR``.

        ``split``: the serving process runs no background loop (``LIVE_BACKGROUND_LOOPS=false``)
        and a ``live worker`` on the same Redis and data does that work (its own process, whose
        CPU is read apart: ``Proc.worker``)."""
        if split:
            env = {**env, "LIVE_BACKGROUND_LOOPS": "false"}
        port = free_port()
        data = self.dir / f"data-{port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
        full.update({"LIVE_REDIS_URL": redis_url, "LIVE_DATA_DIR": str(data), "LIVE_LOG_LEVEL": "WARNING",
                     "LIVE_SOCKETIO_REDIS_MANAGER": self.manager,
                     # One load-test address mints every viewer: the per-address guest limit is off.
                     "LIVE_GUEST_RATE_PER_S": "1000000", "LIVE_GUEST_RATE_BURST": "1000000",
                     # A bench client taps far faster than a thumb: the per-user tap limit still runs
                     # on every tap (its CPU is measured) but never refuses one.
                     "LIVE_BUY_RATE_PER_S": "1000000", "LIVE_BUY_RATE_BURST": "1000000",
                     # Joining 10,000 viewers on a busy box can take minutes: the room, whose
                     # streamer holds no socket here, must not end as idle meanwhile.
                     "LIVE_ROOM_IDLE_END_S": "3600", **env})
        log = self.dir / f"project-{port}.log"
        # BENCH_PROFILE_SERVER=FILE: run the serving process under cProfile (exact call counts per
        # ack; times are inflated ~2x), written to FILE when the bench stops it.
        profile = os.environ.get("BENCH_PROFILE_SERVER")
        prefix = ["-m", "cProfile", "-o", profile] if profile else []
        p = subprocess.Popen([sys.executable, *prefix, str(ROOT / "run_server.py"), "--port", str(port)], env=full,
                             cwd=str(ROOT), stdout=log.open("wb"), stderr=subprocess.STDOUT)
        proc = Proc("project", p, f"http://127.0.0.1:{port}", log)
        self.procs.append(proc)
        wait_http(proc.url, 90, p)
        if split:
            wport = free_port()
            wlog = self.dir / f"worker-{port}.log"
            wenv = {k: v for k, v in full.items() if k != "LIVE_BACKGROUND_LOOPS"}
            w = subprocess.Popen([sys.executable, "-m", "live.ops.cli", "worker", "--host", "127.0.0.1", "--port",
                                  str(wport)], env=wenv, cwd=str(ROOT), stdout=wlog.open("wb"),
                                 stderr=subprocess.STDOUT)
            proc.worker = Proc("worker", w, f"http://127.0.0.1:{wport}", wlog)
            self.procs.append(proc.worker)
            wait_http(proc.worker.url, 90, w)
        return proc

    def start_node(self, redis_url: str) -> Proc:
        """The Node reference, copied out of the read-only shared folder and ``npm install``-ed once."""
        src = self.dir / "node-socketio"
        if not (src / "node_modules").exists():
            shutil.copytree(NODE_SRC, src, dirs_exist_ok=True)
            for path in src.rglob("*"):
                with contextlib.suppress(OSError):
                    path.chmod(path.stat().st_mode | 0o200)
            (src).chmod(0o755)
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=src, check=True,
                           timeout=300)
        port = free_port()
        log = self.dir / f"node-{port}.log"
        p = subprocess.Popen(["node", str(src / "server.js"), str(port), redis_url], cwd=str(src),
                             stdout=log.open("wb"), stderr=subprocess.STDOUT)
        proc = Proc("node", p, f"http://127.0.0.1:{port}", log)
        self.procs.append(proc)
        wait_http(proc.url, 30, p)
        return proc

    def stop(self, proc: Proc) -> None:
        for p in (proc, proc.worker):
            if p is not None:
                p.stop()
                if p in self.procs:
                    self.procs.remove(p)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            yield self
        finally:
            self.close()


def server_env(pairs: list[str]) -> dict[str, str]:
    """``["LIVE_X=1", …]`` → ``{"LIVE_X": "1"}``; only LIVE_ settings are accepted."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("LIVE_"):
            raise SystemExit(f"--server-env wants LIVE_NAME=VALUE, got {pair!r}")
        env[key] = value
    return env
