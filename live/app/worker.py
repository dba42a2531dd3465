"""The ``worker`` process role: the background loops, no clients.

A worker opens the same services as a server (``open_services(role="worker")``) and runs the
loops tagged ``"background"`` or ``"both"`` (persisters, sweepers, reconcile, the webhook sender,
...; the table is in docs/architecture.md). It serves no pages and no Socket.IO: its pushes go
out through python-socketio's Redis manager in write-only mode, on the channel the serving
processes' ``FanoutRedisManager`` listens to, so they reach clients on every serving process.
It answers ``/healthz`` and ``/metrics`` on a port of its own, and heartbeats into
``live:workers``, which a serving process without background loops shows in its ``/healthz``.

Any number of workers may run: each loop claims its work safely (stream consumer groups,
conditional Lua scripts, conditional SQL updates, row locks, delivery leases; the table says
which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

from live.app.services import Domains, Services, open_services, stop_tasks
from live.core import keys
from live.core.metrics import CONTENT_TYPE_LATEST
from live.core.push import room_channel, user_channel
from live.core.settings import Settings

log = logging.getLogger(__name__)

SOCKETIO_CHANNEL = f"{keys.PREFIX}:socketio"  # the channel of live.transport.sio.make_server


class RedisPusher:
    """``live.core.push.Pusher`` for a process without clients: every push is published to the
    serving processes through Redis (python-socketio's message format, write-only manager); a
    kick goes on the bus, as a serving process's does."""

    def __init__(self, redis_url: str) -> None:
        self.manager = socketio.AsyncRedisManager(redis_url, channel=SOCKETIO_CHANNEL, write_only=True)
        self.bus_publish: Callable[[str, str], Any] | None = None

    async def to_room(self, room_id: str, event: str, data: Any) -> None:
        await self.manager.emit(event, data, namespace="/", room=room_channel(room_id))

    async def to_user(self, user_id: str, event: str, data: Any) -> None:
        await self.manager.emit(event, data, namespace="/", room=user_channel(user_id))

    async def kick(self, room_id: str, user_id: str) -> None:
        if self.bus_publish is not None:
            await self.bus_publish(keys.CH_KICK, f"{room_id} {user_id}")

    async def close(self) -> None:
        redis = getattr(self.manager, "redis", None)
        if redis is not None:
            await redis.aclose()


async def workers_alive(svc: Services) -> int:
    """How many ``live worker`` processes heartbeated within ``heartbeat_dead_after_s``."""
    since = int((time.time() - svc.settings.heartbeat_dead_after_s) * 1000)
    return int(await svc.redis.zcount(keys.WORKERS, since, "+inf"))


async def beat(svc: Services) -> None:
    now = int(time.time() * 1000)
    await svc.redis.zadd(keys.PROCS, {svc.proc_id: now})
    await svc.redis.zadd(keys.WORKERS, {svc.proc_id: now})
    await svc.redis.zremrangebyscore(keys.WORKERS, "-inf", now - int(svc.settings.heartbeat_dead_after_s * 1000))


async def heartbeat_loop(svc: Services, stop: asyncio.Event) -> None:
    """Say "alive" every ``heartbeat_interval_s``; forget workers silent past the dead-after
    time (one ``kill -9``-ed); leave the sets on a clean stop.

    The heartbeat goes into ``live:procs`` too: the persisters count a stream consumer as alive
    while its process is there, and claim the pending entries of the others at once — without
    it, one worker would take a live worker's entries as a dead one's. (Presence reaps a dead
    worker from it like any process; it held no viewers.)"""
    try:
        while not stop.is_set():
            try:
                await beat(svc)
            except Exception as e:  # Redis away: the loops log it too; try again next beat
                log.warning("worker heartbeat failed: %r", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), svc.settings.heartbeat_interval_s)
    finally:
        with contextlib.suppress(Exception):
            await svc.redis.zrem(keys.WORKERS, svc.proc_id)
            await svc.redis.zrem(keys.PROCS, svc.proc_id)


def ops_app(svc: Services) -> web.Application:
    """``/healthz`` (Redis, the database, the persisters of this worker) and ``/metrics``."""
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        results = await svc.check_backends()
        ok = all(results.values())
        body: dict[str, object] = {"status": "ok" if ok else "unavailable", "role": "worker",
                                   "proc_id": svc.proc_id, "checks": results}
        if not ok:
            body["error"] = {"code": "UNAVAILABLE", "message": "a backend does not answer"}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_request: web.Request) -> web.Response:
        resp = web.Response(body=svc.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def run_worker(settings: Settings, domains: Domains, *, redis_url: str, host: str, port: int,
                     ready: Callable[[str], None] | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the background loops of ``domains`` (``live.app.factory.DOMAINS``) until ``stop`` (or
    SIGINT/SIGTERM); ``ready(url)`` is called once the loops run and the ops port listens."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pusher = RedisPusher(redis_url)
    tasks: list[asyncio.Task[None]] = []
    runner: web.AppRunner | None = None
    try:
        async with open_services(settings, domains, redis_url=redis_url, role="worker", pusher=pusher) as svc:
            pusher.bus_publish = svc.bus.publish
            try:
                await beat(svc)  # alive before the persisters look for dead consumers
                specs = svc.run_loops(serving=False, background=True)
                named = [("bus", svc.bus.run), *((s.name, s.run) for s in specs)]
                tasks = [asyncio.create_task(run(stop), name=name) for name, run in named]
                tasks.append(asyncio.create_task(heartbeat_loop(svc, stop), name="worker-heartbeat"))
                runner = web.AppRunner(ops_app(svc), access_log=None)
                await runner.setup()
                sock = socket.create_server((host, port))  # port 0: any free one, told in the ready line
                await web.SockSite(runner, sock).start()
                url = f"http://{host}:{sock.getsockname()[1]}"
                log.info("worker %s runs %d loops (%s); ops on %s", svc.proc_id, len(named),
                         ", ".join(n for n, _ in named), url)
                if ready is not None:
                    ready(url)
                await stop.wait()
            finally:
                stop.set()
                if runner is not None:
                    await runner.cleanup()
                await stop_tasks(stop, tasks)
    finally:
        await pusher.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
