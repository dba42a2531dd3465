"""The services of one server process, built and torn down by ``live.app.factory``.

Domain services live here side by side; transport handlers reach them through
``request.app[SERVICES]`` (HTTP) or the Socket.IO layer, never through globals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from live.community.presence import Presence
from live.community.rooms import RoomService
from live.core.auth import AuthService
from live.core.bus import Bus
from live.core.metrics import Metrics
from live.core.push import Pusher
from live.core.ratelimit import RateLimiter
from live.core.settings import Settings

log = logging.getLogger(__name__)
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Services:
    settings: Settings
    proc_id: str
    redis: Any
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    scripts: Any
    metrics: Metrics
    bus: Bus
    pusher: Pusher
    ratelimit: RateLimiter
    auth: AuthService
    presence: Presence
    rooms: RoomService
    # Domains installed after the foundation (each module's ``install(services)`` sets its own).
    flash: Any = None
    orders: Any = None
    storage: Any = None
    images: Any = None
    chat: Any = None
    guard: Any = None
    moderation: Any = None
    media: Any = None
    fans: Any = None  # live.fans.service.FansService
    aftersales: Any = None
    webhooks: Any = None  # live.integrations.webhooks.WebhookService
    # Background loops to run while the app serves: (name, loop(stop_event)).
    loops: list[tuple[str, Loop]] = field(default_factory=list)
    # Called, newest first, when the app stops (after loops are stopped).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Extra readiness checks for /healthz: name -> coroutine returning True when healthy.
    health: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
