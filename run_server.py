"""Start live-commerce: HTTP and Socket.IO on one port.

    python run_server.py [--host 127.0.0.1] [--port 8080] [--config FILE] [--workers N]

With no settings it runs on embedded defaults (its own redis-server, SQLite under ./var).
With ``--workers N`` a supervisor starts the shared Redis (if embedded), migrates the
database once, and runs N worker processes on the same port (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

from aiohttp import web

from live.app.factory import create_app
from live.core.settings import Settings, SettingsError, load_settings

log = logging.getLogger("live")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="live-commerce server")
    p.add_argument("--host", default=None, help="address to bind (default from settings: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default from settings: 8080)")
    p.add_argument("--config", default=None, help="a TOML file of settings")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the port")
    return p.parse_args(argv)


def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("live-commerce on http://%s:%s (%s)", settings.host, settings.port, settings)
    loop = new_event_loop(settings.event_loop)
    asyncio.set_event_loop(loop)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, reuse_port=reuse_port or None,
                print=None, shutdown_timeout=5, handle_signals=True, loop=loop)


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop (libuv) by default, the standard library's on request."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def supervise(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``settings.workers`` processes on one port; own the embedded Redis if any."""
    from live.core import db as dbmod
    from live.ops.embedded import EmbeddedRedis

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = dict(os.environ)
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
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"]
    if args.config:
        cmd += ["--config", args.config]
    cmd += ["--host", settings.host, "--port", str(settings.port)]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(settings.workers)]
    log.info("supervisor: %d workers on http://%s:%s", len(procs), settings.host, settings.port)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    log.error("worker %s exited with %s; restarting", p.pid, p.returncode)
                    procs[i] = subprocess.Popen(cmd, env=env)
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if embedded is not None:
            embedded.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    worker = "--worker" in argv
    args = parse_args([a for a in argv if a != "--worker"])
    try:
        settings = load_settings(args.config, host=args.host, port=args.port,
                                 workers=args.workers if args.workers > 1 else None)
    except SettingsError as e:
        print(f"live-commerce: {e}", file=sys.stderr)
        return 2
    if worker:
        serve(settings, reuse_port=True)
        return 0
    if settings.workers > 1:
        return supervise(settings, args)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
