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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from live.app.appkeys import SERVICES, SETTINGS, ServicesRef
from live.app.services import Services, open_services, stop_tasks
from live.app.worker import workers_alive
from live.core.settings import Settings
from live.ops.embedded import EmbeddedRedis
from live.transport import openapi, pages, routes_core, sio_rooms
from live.transport.http import MIDDLEWARES
from live.transport.sio import SioPusher, SocketApp, make_server
from live.transport.upgrades import direct_upgrades

log = logging.getLogger(__name__)

SOCKETIO_PATH = "socket.io"  # served at /socket.io/

# Domains after the foundation: (domain module, transport module). The domain module has
# ``install(services)`` (builds its service, adds loops/closers) and may name its Lua files in a
# module-level ``SCRIPTS``; the transport module has ``setup(app, socket_app)`` (routes and
# Socket.IO events, at creation time). ``live.app.services.open_services`` installs the domains
# for the server and for the ``live`` commands alike.
DOMAINS: list[tuple[str, str]] = [
    ("live.community.rooms", "live.transport.routes_rooms"),
    ("live.community.chat", "live.transport.routes_chat"),
    ("live.commerce.flashbuy", "live.transport.routes_flash"),
    ("live.media.rtc", "live.transport.routes_media"),
    ("live.fans.service", "live.transport.routes_fans"),
    ("live.commerce.aftersales", "live.transport.routes_aftersales"),
    ("live.integrations.webhooks", "live.transport.routes_webhooks"),
    ("live.governance", "live.transport.routes_governance"),
    ("live.governance.audit", "live.transport.routes_audit"),
]


def create_app(settings: Settings) -> web.Application:
    """An application for ``settings``; nothing is opened until it starts."""
    # A websocket upgrade of Socket.IO skips the other middlewares (their frames would stay
    # suspended for the connection's whole life: live.transport.upgrades).
    app = web.Application(middlewares=[direct_upgrades(f"/{SOCKETIO_PATH}/"), *MIDDLEWARES],
                          client_max_size=settings.max_upload_bytes + 65536)
    app[SETTINGS] = settings
    ref = ServicesRef()
    app[SERVICES] = ref

    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir, settings.redis_appendfsync)
    redis_url = settings.redis_url or (embedded.url if embedded else "")
    sio = make_server(settings, redis_url if settings.use_redis_manager else None)
    sio.attach(app, socketio_path=SOCKETIO_PATH)

    async def close_sockets(_app: web.Application) -> None:
        await sio.close_detached()

    app.on_shutdown.append(close_sockets)
    socket_app = SocketApp(sio, ref)

    app.router.add_routes(routes_core.routes)
    sio_rooms.register(socket_app)
    for _, transport in DOMAINS:
        importlib.import_module(transport).setup(app, socket_app)
    openapi.setup(app, socket_app)  # last: it describes the routes and events registered above
    pages.setup(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async for _ in _lifecycle(settings, ref, embedded, redis_url, socket_app):
            yield

    app.cleanup_ctx.append(lifecycle)
    return app


async def _lifecycle(settings: Settings, ref: ServicesRef, embedded: EmbeddedRedis | None, redis_url: str,
                     socket_app: SocketApp) -> AsyncIterator[None]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sio = socket_app.sio
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    try:
        if embedded is not None:
            await embedded.start()
        async with open_services(settings, DOMAINS, redis_url=redis_url, role="server", pusher=SioPusher(sio)) as svc:
            # Runs last of the closers (they run newest first): leave presence once all else is shut.
            svc.closers.insert(0, svc.presence.shutdown)
            try:
                ref.set(svc)
                for hook in socket_app.on_start:
                    res = hook(svc)
                    if inspect.isawaitable(res):
                        await res
                # Single-process mode runs every loop; a serving process of a split deployment only
                # its own side's, and a `live worker` the rest (docs/architecture.md, "Process roles").
                specs = svc.run_loops(serving=True, background=settings.background_loops)
                loops = [("bus", svc.bus.run), ("presence", svc.presence.run), *((s.name, s.run) for s in specs)]
                tasks = [asyncio.create_task(loop(stop), name=name) for name, loop in loops]
                svc.info["background"] = _background_info(svc)
                if embedded is not None:
                    tasks.append(asyncio.create_task(_until(stop, embedded.supervise()), name="embedded-redis"))
                if settings.use_redis_manager:
                    # Start the manager's listener now, so that its task is ours to stop at exit.
                    sio.manager_initialized = True
                    sio.manager.initialize()
                await asyncio.wait_for(svc.bus.ready.wait(), 10)
                await svc.presence.heartbeat()
                log.info("serving as %s (redis %s)", svc.proc_id, "embedded" if embedded else "external")
                yield
            finally:
                await stop_tasks(stop, tasks)
            # Leaving the block runs the closers (domains may still push), then closes Redis and SQL.
    finally:
        ref.set(None)
        thread = getattr(sio.manager, "thread", None)
        if thread is not None:
            thread.cancel()
            await asyncio.gather(thread, return_exceptions=True)
        mgr_redis = getattr(sio.manager, "redis", None)
        if mgr_redis is not None:
            await mgr_redis.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _background_info(svc: Services) -> Callable[[], Awaitable[dict[str, Any]]]:
    """For /healthz: where the background loops run, and how many workers are alive."""
    async def info() -> dict[str, Any]:
        try:
            alive: int | None = await workers_alive(svc)
        except Exception:  # Redis away: the redis check says so
            alive = None
        return {"in_process": svc.settings.background_loops, "workers_alive": alive}

    return info


async def _until(stop: asyncio.Event, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` until ``stop`` is set, then cancel it."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    for t in (task, waiter):
        t.cancel()
    await asyncio.gather(task, waiter, return_exceptions=True)
