"""The app factory: ``create_app(settings)`` builds an aiohttp application serving HTTP and
Socket.IO on one port. Every resource is opened and closed in one ``cleanup_ctx``.

Routes and Socket.IO events are registered here, when the app is created (aiohttp freezes
the router at start-up); the services they call exist only while the app runs and are reached
through ``app[SERVICES]``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import socket
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from live.app.appkeys import SERVICES, SETTINGS, ServicesRef
from live.app.services import Services
from live.community.presence import Presence
from live.community.rooms import RoomService
from live.core import db as dbmod
from live.core.auth import AuthService, load_or_create_secret
from live.core.bus import Bus
from live.core.ids import new_id
from live.core.metrics import Metrics
from live.core.ratelimit import RateLimiter
from live.core.redisconn import make_redis
from live.core.scripts import Scripts
from live.core.settings import Settings
from live.ops.embedded import EmbeddedRedis
from live.transport import openapi, routes_core, sio_rooms
from live.transport.http import MIDDLEWARES
from live.transport.sio import SioPusher, SocketApp, make_server

log = logging.getLogger(__name__)

# Lua scripts of the foundation (one file each under live/lua/); domains add their own
# through a module-level ``SCRIPTS`` list.
SCRIPTS = ["bucket", "presence_join", "presence_leave", "presence_reap", "coalesce"]

# Domains after the foundation: (domain module, transport module). The domain module has
# ``install(services)`` (builds its service, adds loops/closers); the transport module has
# ``setup(app, socket_app)`` (routes and Socket.IO events, at creation time).
DOMAINS: list[tuple[str, str]] = [
    ("live.community.rooms", "live.transport.routes_rooms"),
    ("live.community.chat", "live.transport.routes_chat"),
    ("live.commerce.flashbuy", "live.transport.routes_flash"),
    ("live.media.rtc", "live.transport.routes_media"),
    ("live.fans.service", "live.transport.routes_fans"),
    ("live.commerce.aftersales", "live.transport.routes_aftersales"),
    ("live.integrations.webhooks", "live.transport.routes_webhooks"),
]


def create_app(settings: Settings) -> web.Application:
    """An application for ``settings``; nothing is opened until it starts."""
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=settings.max_upload_bytes + 65536)
    app[SETTINGS] = settings
    ref = ServicesRef()
    app[SERVICES] = ref

    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir, settings.redis_appendfsync)
    redis_url = settings.redis_url or (embedded.url if embedded else "")
    sio = make_server(settings, redis_url if settings.use_redis_manager else None)
    sio.attach(app, socketio_path="socket.io")
    socket_app = SocketApp(sio, ref)

    app.router.add_routes(routes_core.routes)
    sio_rooms.register(socket_app)
    for _, transport in DOMAINS:
        importlib.import_module(transport).setup(app, socket_app)
    openapi.setup(app, socket_app)  # last: it describes the routes and events registered above
    pages = importlib.util.find_spec("live.transport.pages")
    if pages is not None:
        importlib.import_module("live.transport.pages").setup(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async for _ in _lifecycle(settings, ref, embedded, redis_url, socket_app):
            yield

    app.cleanup_ctx.append(lifecycle)
    return app


async def _lifecycle(settings: Settings, ref: ServicesRef, embedded: EmbeddedRedis | None, redis_url: str,
                     socket_app: SocketApp) -> AsyncIterator[None]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    proc_id = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
    sio = socket_app.sio
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    svc: Services | None = None
    redis = None
    engine = None
    try:
        if embedded is not None:
            await embedded.start()
        redis = make_redis(redis_url, settings, cluster=settings.redis_cluster)
        engine = dbmod.make_engine(settings.resolved_database_url)
        await dbmod.migrate(engine)
        scripts = Scripts(redis, SCRIPTS + [s for d, _ in DOMAINS
                                            for s in getattr(importlib.import_module(d), "SCRIPTS", [])])
        pusher = SioPusher(sio)
        sessionmaker = dbmod.make_sessionmaker(engine)
        auth = AuthService(sessionmaker, load_or_create_secret(settings.secret, settings.data_dir),
                           settings.token_ttl_s, settings.admin_token, redis=redis,
                           role_cache_s=settings.role_cache_s, hash_workers=settings.password_hash_workers,
                           hash_queue=settings.password_hash_queue)

        async def push_viewers(room_id: str, n: int) -> None:
            await pusher.to_room(room_id, "room:viewers", {"room_id": room_id, "viewers": n})

        metrics = Metrics()
        presence = Presence(redis, scripts, proc_id, heartbeat_s=settings.heartbeat_interval_s,
                            dead_after_s=settings.heartbeat_dead_after_s,
                            push_interval_s=settings.viewers_push_interval_s, on_count=push_viewers,
                            rooms_gauge=metrics.rooms)
        svc = Services(
            settings=settings, proc_id=proc_id, redis=redis, engine=engine, db=sessionmaker, scripts=scripts,
            metrics=metrics, bus=Bus(redis), pusher=pusher, ratelimit=RateLimiter(scripts), auth=auth,
            presence=presence, rooms=RoomService(sessionmaker, pusher, presence, redis),
        )
        for domain, _ in DOMAINS:
            importlib.import_module(domain).install(svc)
        ref.set(svc)
        for hook in socket_app.on_start:
            res = hook(svc)
            if inspect.isawaitable(res):
                await res
        loops = [("bus", svc.bus.run), ("presence", presence.run), *svc.loops]
        tasks = [asyncio.create_task(loop(stop), name=name) for name, loop in loops]
        if embedded is not None:
            tasks.append(asyncio.create_task(_until(stop, embedded.supervise()), name="embedded-redis"))
        if settings.use_redis_manager:
            # Start the manager's listener now, so that its task is ours to stop at exit.
            sio.manager_initialized = True
            sio.manager.initialize()
        await asyncio.wait_for(svc.bus.ready.wait(), 10)
        await presence.heartbeat()
        log.info("serving as %s (redis %s)", proc_id, "embedded" if embedded else "external")
        yield
    finally:
        stop.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if svc is not None:
            for close in reversed(svc.closers):
                try:
                    await close()
                except Exception:
                    log.exception("closing failed")
            await svc.presence.shutdown()
        ref.set(None)
        thread = getattr(sio.manager, "thread", None)
        if thread is not None:
            thread.cancel()
            await asyncio.gather(thread, return_exceptions=True)
        mgr_redis = getattr(sio.manager, "redis", None)
        if mgr_redis is not None:
            await mgr_redis.aclose()
        if redis is not None:
            await redis.aclose()
        if engine is not None:
            await engine.dispose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _until(stop: asyncio.Event, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` until ``stop`` is set, then cancel it."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    for t in (task, waiter):
        t.cancel()
    await asyncio.gather(task, waiter, return_exceptions=True)
