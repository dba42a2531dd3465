"""``live-server``: HTTP and Socket.IO on one port.

    live-server [--host 127.0.0.1] [--port 8080] [--config FILE] [--workers N]
    python run_server.py ...        (the same, from a source checkout)

With no settings it runs on embedded defaults (its own redis-server, SQLite under ./var).
With ``--workers N`` a supervisor starts the shared Redis (if embedded), migrates the database
once, and runs N serving processes on the same port (SO_REUSEPORT) with no background loops,
plus one ``live worker`` that runs them all (docs/operations.md, "Process roles"). It prints the
banner once every child is ready, restarts a child that dies, and exits with one line if a child
exits by itself during start-up or keeps dying (5 times in a minute). ``--no-background`` runs one serving
process without background loops (a `live worker` elsewhere does that work).

One instance per data dir: the server (or the supervisor) holds ``<data_dir>/live.lock`` for its
lifetime whenever the data dir holds something only one instance may own (the embedded Redis,
the default SQLite file). A second server on the same data dir, or on a busy port, exits with one
line and code 1 before it touches anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import orjson
from aiohttp import log as aiohttp_log
from aiohttp import web

import live
from live.app import heap
from live.app.factory import create_app
from live.app.ready import READY_FD_ENV, notify_ready
from live.app.services import ADMIN_TOKEN_FILE, admin_token
from live.core.settings import Settings, SettingsError, load_settings
from live.ops.embedded import EmbeddedRedis, find_redis_server

log = logging.getLogger("live")

LOCK_FILE = "live.lock"
OWNER_FILE = "live.owner.json"  # who holds the lock: pid and URL, for the refusal message


class StartError(Exception):
    """Start-up refused for a reason the operator can fix; the message is the one line shown."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    fields = Settings.model_fields
    p = argparse.ArgumentParser(prog="live-server", description="live-commerce server: pages, API and "
                                "Socket.IO on one port. Every setting (see `live defaults`) is read from "
                                "--config FILE, then from LIVE_<NAME> environment variables.")
    p.add_argument("--host", default=None,
                   help=f"address to bind (default: {fields['host'].default}, or LIVE_HOST)")
    p.add_argument("--port", type=int, default=None,
                   help=f"port, 0 for any free one (default: {fields['port'].default}, or LIVE_PORT)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a TOML file of settings, keys as in `live defaults` (default: none)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="N serving processes sharing the port plus one background worker, under one "
                   "supervisor (default: one process that does everything)")
    p.add_argument("--no-background", action="store_true",
                   help="serve only: run no background loop (persisters, sweepers, ...); a `live worker` "
                   "runs them (the same as LIVE_BACKGROUND_LOOPS=false)")
    return p.parse_args(argv)


# --- one instance per data dir ----------------------------------------------------------------
def needs_lock(settings: Settings) -> bool:
    """Whether the data dir holds state only one instance may own.

    Processes of one deployment that share an external Redis and database may also share a data
    dir (uploaded images); the embedded Redis and the default SQLite file have one owner.
    """
    return settings.embedded_redis or not settings.database_url


Announce = Callable[[str], None]


@contextlib.contextmanager
def instance_lock(settings: Settings) -> Iterator[Announce]:
    """Hold ``<data_dir>/live.lock`` (an OS file lock: released even by ``kill -9``); yields
    ``announce(url)``, which records who holds it for the message a second server prints."""
    if not needs_lock(settings):
        yield lambda url: None
        return
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(data_dir / LOCK_FILE, timeout=0)
    owner = data_dir / OWNER_FILE
    try:
        lock.acquire()
    except filelock.Timeout:
        try:
            who = orjson.loads(owner.read_bytes())
            holder = f" (pid {who.get('pid')}, {who.get('url')})"
        except (OSError, ValueError):
            holder = ""
        raise StartError(f"another live-commerce server is using the data dir {data_dir}{holder}; "
                         "stop it, or give this one its own LIVE_DATA_DIR") from None

    def announce(url: str) -> None:
        owner.write_bytes(orjson.dumps({"pid": os.getpid(), "url": url}))

    try:
        announce("starting")
        yield announce
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()


# --- the listening socket ---------------------------------------------------------------------
def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound socket for ``host:port`` (bound here, before anything starts, so that a busy port
    is one clear line and not a traceback after the embedded Redis has been started)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise StartError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as e:
        sock.close()
        hint = " (another server? choose another with --port or LIVE_PORT)" if e.errno == errno.EADDRINUSE else ""
        raise StartError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
    sock.set_inheritable(False)
    return sock


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"


def banner(settings: Settings, url: str) -> str:
    """What a new user needs first: where the pages are and how a moderator signs in."""
    if settings.admin_token:
        token = "LIVE_ADMIN_TOKEN"
    else:
        token = (f"{admin_token(settings)}  (kept in {settings.data_dir.resolve() / ADMIN_TOKEN_FILE}; "
                 "`live admin-token` prints it)")
    return (f"live-commerce is ready\n"
            f"  live rooms   {url}/\n"
            f"  studio       {url}/studio\n"
            f"  moderation   {url}/moderation\n"
            f"  moderator token: {token}\n")


# --- running ----------------------------------------------------------------------------------
def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop (libuv) by default, the standard library's on request."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(settings: Settings, sock: socket.socket, *, show_banner: bool = True) -> None:
    url = base_url(settings.host, sock.getsockname()[1])
    log.info("live-commerce on %s (%s)", url, settings)
    loop = new_event_loop(settings.event_loop)
    asyncio.set_event_loop(loop)
    app = create_app(settings)

    def ready(_message: str) -> None:  # run_app calls it once the services are open and the port listens
        heap.settle(settings.gc_young_threshold)
        notify_ready()
        if show_banner:
            print(banner(settings, url), flush=True)

    # aiohttp makes an access logger per connection (~110 bytes each, kept for a websocket's
    # life); when its records would be dropped anyway, make none.
    access_log = aiohttp_log.access_logger if aiohttp_log.access_logger.isEnabledFor(logging.INFO) else None
    web.run_app(app, sock=sock, print=ready, shutdown_timeout=5, handle_signals=True, loop=loop,
                access_log=access_log)


# --- the supervisor ---------------------------------------------------------------------------
RESTARTS_PER_MINUTE = 5  # a child that dies more often than this is not going to get better


class Child:
    """One supervised process: a serving process or the background worker."""

    def __init__(self, kind: str, cmd: list[str], env: dict[str, str], ready_fd: int) -> None:
        self.kind, self.cmd, self.env, self.ready_fd = kind, cmd, env, ready_fd
        self.deaths: list[float] = []
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        env = {**self.env, READY_FD_ENV: str(self.ready_fd)}
        self.proc = subprocess.Popen(self.cmd, env=env, pass_fds=(self.ready_fd,))
        return self.proc

    def crash_looping(self, now: float) -> bool:
        self.deaths = [t for t in self.deaths if now - t < 60] + [now]
        return len(self.deaths) > RESTARTS_PER_MINUTE


def supervise(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``settings.workers`` serving processes on one port and one background worker; own the
    embedded Redis if any. Returns 0 after a Ctrl-C/SIGTERM, 1 when a child could not start or
    kept dying."""
    from live.core import db as dbmod

    bind(settings.host, settings.port).close()  # a busy port is refused here, not in N workers
    env = dict(os.environ)
    # Children import this installation of ``live`` whatever their working directory.
    package_root = str(Path(live.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir, settings.redis_appendfsync)
        asyncio.run(embedded.start())
        env["LIVE_REDIS_URL"] = embedded.url
    env["LIVE_WORKERS"] = str(settings.workers)

    async def migrate() -> None:
        engine = dbmod.make_engine(settings.resolved_database_url)
        await dbmod.migrate(engine)
        await engine.dispose()

    asyncio.run(migrate())
    config = ["--config", args.config] if args.config else []
    # -P: the working directory is not put on sys.path (a folder named ``live`` there must not win).
    serving_cmd = [sys.executable, "-P", "-m", "live.app.main", "--worker", *config,
                   "--host", settings.host, "--port", str(settings.port)]
    worker_cmd = [sys.executable, "-P", "-m", "live.ops.cli", *config, "worker", "--host", "127.0.0.1", "--port", "0"]
    serving_env = {**env, "LIVE_BACKGROUND_LOOPS": "false"}
    read_fd, ready_fd = os.pipe()
    os.set_blocking(read_fd, False)
    children = [Child("serving process", serving_cmd, serving_env, ready_fd) for _ in range(settings.workers)]
    children.append(Child("background worker", worker_cmd, env, ready_fd))
    url = base_url(settings.host, settings.port)
    log.info("supervisor: %d serving processes and 1 background worker on %s", settings.workers, url)
    stopping = False
    code = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ready: set[int] = set()
    announced = False
    buf = b""
    try:
        while not stopping:
            with contextlib.suppress(BlockingIOError):
                buf += os.read(read_fd, 4096)
            *lines, buf = buf.split(b"\n")
            ready.update(int(line) for line in lines if line.strip().isdigit())
            if not announced and all(c.proc.pid in ready for c in children):
                announced = True
                print(banner(settings, url), flush=True)
            now = time.monotonic()
            for c in children:
                rc = c.proc.poll()
                if rc is None:
                    continue
                if not announced and rc >= 0:  # it gave up by itself (settings, a backend): it would again
                    print(f"live-server: a {c.kind} exited with code {rc} during start-up (its log is above); "
                          "stopping", file=sys.stderr, flush=True)
                    return 1
                if c.crash_looping(now):
                    print(f"live-server: a {c.kind} died {RESTARTS_PER_MINUTE + 1} times within a minute "
                          f"(last code {rc}); stopping", file=sys.stderr, flush=True)
                    return 1
                log.error("supervisor: %s %s exited with code %s; restarting it", c.kind, c.proc.pid, rc)
                c.start()
            time.sleep(0.2)
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGINT)
        for c in children:
            try:
                c.proc.wait(15)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        os.close(read_fd)
        os.close(ready_fd)
        if embedded is not None:
            embedded.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    worker = "--worker" in argv  # internal: a serving process started by the supervisor
    args = parse_args([a for a in argv if a != "--worker"])
    try:
        settings = load_settings(args.config, host=args.host, port=args.port, workers=args.workers,
                                 background_loops=False if args.no_background else None)
    except SettingsError as e:
        print(f"live-server: {e}", file=sys.stderr)
        return 2
    _configure_logging(settings)
    try:
        if worker:  # the supervisor holds the lock and checked the port
            serve(settings, bind(settings.host, settings.port, reuse_port=True), show_banner=False)
            return 0
        with instance_lock(settings) as announce:
            if settings.embedded_redis:
                try:
                    find_redis_server()
                except RuntimeError as e:
                    raise StartError(str(e)) from None
            if args.workers is not None:
                announce(base_url(settings.host, settings.port))
                return supervise(settings, args)
            sock = bind(settings.host, settings.port)
            announce(base_url(settings.host, sock.getsockname()[1]))
            serve(settings, sock)
            return 0
    except StartError as e:
        print(f"live-server: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
