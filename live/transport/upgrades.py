"""Websocket upgrades of Socket.IO go straight to Engine.IO's handler, past the other middlewares.

A websocket's request handler runs for the connection's whole life, and every middleware it
passed through stays suspended above it: a coroutine frame each, with its locals (the error
middleware's, the auth middleware's, the security headers'), ~1.2 KB per connected viewer
measured (``python -m bench.memprof``). None of them does anything for an upgrade: Engine.IO
authenticates on its own (the Socket.IO ``connect`` packet), a 101 answer's headers are sent
before the security-headers middleware could add any, and an error after the upgrade cannot be
answered as JSON. So an upgrade of the Socket.IO path skips them, and this middleware itself is
a plain function that returns the handler's awaitable rather than a coroutine waiting on it,
leaving no frame of its own. Everything else (long-polling included) takes the whole chain.
"""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from live.transport.http import Handler


def direct_upgrades(path: str) -> Middleware:
    """A middleware, to run first, that hands a websocket upgrade of ``path`` (``/socket.io/``)
    to the route's own handler."""

    @web.middleware
    def direct(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if request.path == path and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            return request.match_info.handler(request)
        return handler(request)

    return direct
