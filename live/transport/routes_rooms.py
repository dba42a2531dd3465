"""HTTP routes of a streamer's own rooms: ``GET /api/me/rooms[?status=live]``, so that the
studio resumes a live room after signing in again instead of opening a second one."""

from __future__ import annotations

from aiohttp import web

from live.core.errors import Invalid
from live.transport.http import json_response, principal, services
from live.transport.sio import SocketApp

routes = web.RouteTableDef()
STATUSES = ("scheduled", "live", "ended")


@routes.get("/api/me/rooms")
async def my_rooms(request: web.Request) -> web.Response:
    who = principal(request)
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}")
    return json_response(await services(request).rooms.mine(who, status))


def setup(app: web.Application, socket_app: SocketApp) -> None:
    """Add the routes (no Socket.IO events)."""
    app.router.add_routes(routes)
