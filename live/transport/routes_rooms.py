"""HTTP routes of a streamer's own rooms: ``GET /api/me/rooms[?status=live]``, so that the
studio resumes a live room after signing in again instead of opening a second one."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from live.transport.http import api, json_response, principal, query, services
from live.transport.schemas import RoomOut
from live.transport.sio import SocketApp

routes = web.RouteTableDef()


class MyRoomsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    status: Literal["scheduled", "live", "ended"] | None = None


@routes.get("/api/me/rooms")
@api(summary="The caller's own rooms, newest first", tag="rooms", query=MyRoomsQuery, responses={200: list[RoomOut]})
async def my_rooms(request: web.Request) -> web.Response:
    who = principal(request)
    q = query(request, MyRoomsQuery)
    return json_response(await services(request).rooms.mine(who, q.status))


def setup(app: web.Application, socket_app: SocketApp) -> None:
    """Add the routes (no Socket.IO events)."""
    app.router.add_routes(routes)
