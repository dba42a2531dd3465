"""The services of one process, and the one place that builds them: ``open_services``.

The web app (``live.app.factory``) and the operations commands (``live.ops.cli``) both open
their Redis, database, Lua scripts and every domain of ``live.app.factory.DOMAINS`` here, so a
command sees the same services, settings and scripts as the server it works beside.

Transport handlers reach the services through ``request.app[SERVICES]`` (HTTP) or the Socket.IO
layer, never through globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from live.community.presence import Presence
from live.community.rooms import RoomService
from live.core import db as dbmod
from live.core.auth import AuthService, load_or_create_secret
from live.core.bus import Bus
from live.core.ids import new_id
from live.core.metrics import Metrics
from live.core.push import Pusher
from live.core.ratelimit import RateLimiter
from live.core.redisconn import make_redis
from live.core.scripts import Scripts
from live.core.settings import Settings

if TYPE_CHECKING:
    from live.commerce.aftersales import AfterSales
    from live.commerce.flashbuy import FlashService
    from live.commerce.orders import OrderService
    from live.community.chat import ChatService
    from live.community.guard import Guard
    from live.community.moderation import ModerationService
    from live.fans.service import FansService
    from live.governance.audit import Audit
    from live.governance.service import Governance
    from live.integrations.webhooks import WebhookService
    from live.media.images import ImagePipeline
    from live.media.rtc import MediaService
    from live.media.storage import LocalStorage

log = logging.getLogger(__name__)
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Check = Callable[[], Awaitable[bool]]

# Where a background loop runs (docs/architecture.md, "Process roles"):
#   "serving"    needs this process's sockets or memory (its connections, its video, what it sold);
#   "background" works on shared state only (streams, SQL, deadlines): a `live worker` runs it;
#   "both"       each process runs its own copy (it pushes what that very process changed).
Side = Literal["serving", "background", "both"]


class LoopSpec(NamedTuple):
    name: str
    run: Loop
    side: Side
    # A /healthz check that only means something where the loop runs (a persister's health).
    health: tuple[str, Check] | None = None

# Lua scripts of the foundation (presence, rate limits, push coalescing); domains add theirs.
FOUNDATION_SCRIPTS = ["bucket", "presence_join", "presence_leave", "presence_reap", "coalesce"]

ADMIN_TOKEN_FILE = "admin.token"


Domains = list[tuple[str, str]]


def script_names(domains: Domains) -> list[str]:
    """Every Lua script the process registers: the foundation's, then each domain's ``SCRIPTS``."""
    names = list(FOUNDATION_SCRIPTS)
    for domain, _ in domains:
        for name in getattr(importlib.import_module(domain), "SCRIPTS", []):
            if name not in names:
                names.append(name)
    return names


def admin_token(settings: Settings) -> str:
    """The moderator bootstrap token: ``LIVE_ADMIN_TOKEN``, else one generated once and kept in
    the data dir (as Jupyter keeps its token), so a fresh install has a way in."""
    return load_or_create_secret(settings.admin_token, settings.data_dir, ADMIN_TOKEN_FILE, nbytes=18)


@dataclass
class Services:
    settings: Settings
    proc_id: str
    # redis.asyncio.Redis, or RedisCluster with the same command methods (redis_cluster = true).
    redis: aioredis.Redis
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    scripts: Scripts
    metrics: Metrics
    bus: Bus
    pusher: Pusher
    ratelimit: RateLimiter
    auth: AuthService
    presence: Presence
    rooms: RoomService
    # Set by the domains' ``install(services)``; reading one whose domain is not installed is an
    # AttributeError, not a None that fails later.
    flash: FlashService = field(init=False)
    orders: OrderService = field(init=False)
    storage: LocalStorage = field(init=False)
    images: ImagePipeline = field(init=False)
    chat: ChatService = field(init=False)
    guard: Guard = field(init=False)
    moderation: ModerationService = field(init=False)
    media: MediaService = field(init=False)
    fans: FansService = field(init=False)
    aftersales: AfterSales = field(init=False)
    webhooks: WebhookService = field(init=False)
    governance: Governance = field(init=False)
    audit: Audit = field(init=False)
    # Background loops, tagged with the side they belong to; ``run_loops`` picks this role's.
    loops: list[LoopSpec] = field(default_factory=list)
    # Called, newest first, when the services close (after loops are stopped).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Extra readiness checks for /healthz: name -> coroutine returning True when healthy.
    health: dict[str, Check] = field(default_factory=dict)
    # Facts /healthz shows without failing on them: name -> coroutine returning a JSON value.
    info: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)

    def add_loop(self, name: str, run: Loop, side: Side, *, health: tuple[str, Check] | None = None) -> None:
        """Register a background loop (see ``Side``); its ``health`` check is installed only in
        the processes that run it."""
        self.loops.append(LoopSpec(name, run, side, health))

    def run_loops(self, *, serving: bool, background: bool) -> list[LoopSpec]:
        """The loops of a process that serves clients (``serving``) and/or does the shared
        background work (``background``), in registration order; installs their health checks."""
        chosen = [spec for spec in self.loops
                  if spec.side == "both" or (serving and spec.side == "serving")
                  or (background and spec.side == "background")]
        for spec in chosen:
            if spec.health is not None:
                self.health[spec.health[0]] = spec.health[1]
        return chosen

    async def check_backends(self) -> dict[str, bool]:
        """What /healthz reports, of a serving process or a worker: Redis answers a PING within
        2 s, the database answers, and every installed health check holds (all run at once)."""

        async def redis_ok() -> bool:
            try:
                async with asyncio.timeout(2):
                    return bool(await self.redis.ping())
            except Exception:
                return False

        checks: dict[str, Awaitable[bool]] = {"redis": redis_ok(), "database": dbmod.ping(self.engine)}
        checks.update({name: fn() for name, fn in self.health.items()})
        return dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))


async def stop_tasks(stop: asyncio.Event, tasks: list[asyncio.Task[Any]], timeout: float = 10) -> None:
    """Ask the loops to stop (``stop``), give them ``timeout`` seconds, then cancel what is left."""
    stop.set()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class NullPusher:
    """For commands: there are no clients to push to."""

    async def to_room(self, room_id: str, event: str, data: Any) -> None:
        return None

    async def to_user(self, user_id: str, event: str, data: Any) -> None:
        return None

    async def kick(self, room_id: str, user_id: str) -> None:
        return None


# "server": serves clients (with or without the background loops, ``background_loops``);
# "worker": the background loops only (``live worker``); "cli": a command, runs no loop.
Role = Literal["server", "worker", "cli"]


@contextlib.asynccontextmanager
async def open_services(settings: Settings, domains: Domains, *, redis_url: str, role: Role = "server",
                        pusher: Pusher | None = None) -> AsyncIterator[Services]:
    """Open Redis, the database (migrated when ``role`` is ``"server"``), the scripts and every
    domain of ``domains`` (``live.app.factory.DOMAINS``: (domain module, transport module) pairs,
    of which only the domain modules are imported here); close them, newest first, on exit.
    Background loops are listed in ``svc.loops`` but not started: the server and the worker pick
    theirs with ``svc.run_loops``, a command runs none.

    A command (``role="cli"``) gets a ``NullPusher`` and a process id of its own; it never joins
    presence (no heartbeat), so it is invisible to the servers beside it. A worker
    (``role="worker"``) has a process id of its own kind too and no presence either: it holds
    no connections.
    """
    host = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
    proc_id = {"server": host, "worker": f"worker-{host}"}.get(role, f"cli-{os.getpid()}")
    redis = make_redis(redis_url, settings, cluster=settings.redis_cluster)
    engine = dbmod.make_engine(settings.resolved_database_url)
    svc: Services | None = None
    try:
        if role in ("server", "worker"):
            await dbmod.migrate(engine)
        scripts = Scripts(redis, script_names(domains))
        db = dbmod.make_sessionmaker(engine)
        push = pusher or NullPusher()
        secret = load_or_create_secret(settings.secret, settings.data_dir)
        auth = AuthService(db, secret, settings.token_ttl_s, admin_token(settings), redis=redis,
                           role_cache_s=settings.role_cache_s, hash_workers=settings.password_hash_workers,
                           hash_queue=settings.password_hash_queue)
        metrics = Metrics()

        async def push_viewers(room_id: str, n: int) -> None:
            await push.to_room(room_id, "room:viewers", {"room_id": room_id, "viewers": n})

        presence = Presence(redis, scripts, proc_id, heartbeat_s=settings.heartbeat_interval_s,
                            dead_after_s=settings.heartbeat_dead_after_s,
                            push_interval_s=settings.viewers_push_interval_s, on_count=push_viewers,
                            rooms_gauge=metrics.rooms)
        svc = Services(settings=settings, proc_id=proc_id, redis=redis, engine=engine, db=db, scripts=scripts,
                       metrics=metrics, bus=Bus(redis), pusher=push, ratelimit=RateLimiter(scripts), auth=auth,
                       presence=presence, rooms=RoomService(db, push, presence, redis))

        async def close_hash_pool() -> None:  # the Argon2 threads of this process
            auth.hash_pool.close()

        svc.closers.append(close_hash_pool)
        for domain, _ in domains:
            importlib.import_module(domain).install(svc)
        yield svc
    finally:
        if svc is not None:
            for close in reversed(svc.closers):
                try:
                    await close()
                except Exception:
                    log.exception("closing failed")
        await redis.aclose()
        await engine.dispose()

