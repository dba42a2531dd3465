"""Fans transport: follows, notifications, reminders, lucky bags, shop stats; ``lucky:enter``;
and the local delivery path the go-live fan-out uses (this process's connections only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from live.core.auth import Principal
from live.core.push import user_channel
from live.transport.fanout import EncodeOnceEmit
from live.transport.http import api, body, json_response, principal, services
from live.transport.schemas import BagOut, NotificationsOut, Obj
from live.transport.sio import SocketApp

routes = web.RouteTableDef()


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    upto: str | None = Field(None, min_length=1, max_length=32)


class BagIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    title: str = Field(min_length=1, max_length=120)
    prize: str = Field("", max_length=120)
    winners: int = Field(ge=1, le=100_000)
    duration_s: float = Field(gt=0, le=7 * 24 * 3600, strict=False)
    condition: str = Field(pattern="^(present|follower|keyword)$")
    keyword: str | None = Field(None, min_length=1, max_length=32)
    allow_guests: bool = False


class EnterIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    bag_id: str = Field(min_length=1, max_length=64)


@routes.post("/api/users/{user_id}/follow")
@api(summary="Follow a streamer", tag="fans", responses={200: Obj})
async def follow(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).fans.follow(who, request.match_info["user_id"]))


@routes.delete("/api/users/{user_id}/follow")
@api(summary="Unfollow a streamer", tag="fans", responses={200: Obj})
async def unfollow(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).fans.unfollow(who, request.match_info["user_id"]))


@routes.get("/api/users/{user_id}")
@api(summary="A user's public profile (and whether the caller follows)", tag="fans", auth="optional",
     responses={200: Obj})
async def user(request: web.Request) -> web.Response:
    svc = services(request)
    out = await svc.fans.follows.user(request.match_info["user_id"])
    who = _optional_principal(request)
    if who is not None:
        out["following"] = await svc.fans.follows.is_follower(who.id, out["id"])
    return json_response(out)


@routes.get("/api/me/following")
@api(summary="Streamers the caller follows", tag="fans", responses={200: list[Obj]})
async def following(request: web.Request) -> web.Response:
    return json_response(await services(request).fans.follows.following(principal(request)))


@routes.get("/api/me/notifications")
@api(summary="The caller's notifications", tag="fans", responses={200: NotificationsOut})
async def notifications(request: web.Request) -> web.Response:
    return json_response(await services(request).fans.notify.list(principal(request)))


@routes.post("/api/me/notifications/read")
@api(summary="Mark notifications read", tag="fans", request=ReadIn, responses={200: Obj})
async def notifications_read(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ReadIn)
    return json_response(await services(request).fans.notify.mark_read(who, p.upto))


@routes.post("/api/rooms/{room_id}/remind")
@api(summary="Remind me when the room goes live", tag="fans", responses={200: Obj})
async def remind(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).fans.notify.remind(who, request.match_info["room_id"]))


@routes.delete("/api/rooms/{room_id}/remind")
@api(summary="Cancel the reminder", tag="fans", responses={200: Obj})
async def unremind(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).fans.notify.remind(who, request.match_info["room_id"], on=False))


@routes.post("/api/rooms/{room_id}/lucky-bags")
@api(summary="Open a lucky bag in the room", tag="fans", request=BagIn, responses={201: BagOut})
async def open_bag(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, BagIn)
    bag = await services(request).fans.lucky.open(
        who, request.match_info["room_id"], title=p.title.strip(), prize=p.prize.strip(), winners=p.winners,
        duration_s=p.duration_s, condition=p.condition, keyword=(p.keyword or "").strip() or None,
        allow_guests=p.allow_guests)
    return json_response(bag, status=201)


@routes.get("/api/rooms/{room_id}/lucky-bags")
@api(summary="The room's lucky bags", tag="fans", auth="none", responses={200: list[BagOut]})
async def room_bags(request: web.Request) -> web.Response:
    return json_response(await services(request).fans.lucky.of_room(request.match_info["room_id"]))


@routes.get("/api/lucky-bags/{bag_id}")
@api(summary="A lucky bag (with its draw proof once drawn)", tag="fans", auth="none", responses={200: BagOut})
async def get_bag(request: web.Request) -> web.Response:
    return json_response(await services(request).fans.lucky.get(request.match_info["bag_id"]))


@routes.get("/api/shop/stats")
@api(summary="The streamer's shop stats", tag="fans", responses={200: Obj})
async def stats(request: web.Request) -> web.Response:
    return json_response(await services(request).fans.stats(principal(request)))


def _optional_principal(request: web.Request) -> Principal | None:
    if "Authorization" not in request.headers:
        return None
    return principal(request)


class SocketDelivery:
    """``live.fans.notify.LocalDelivery`` on Socket.IO: this process's users, and an emit to
    their per-user rooms through the manager's local path (one encoding per batch), not through
    Redis: every process runs the fan-out for its own connections."""

    def __init__(self, socket_app: SocketApp) -> None:
        self._app = socket_app

    def local_users(self) -> set[str]:
        return {p.id for p in self._app.users.values()}

    async def deliver(self, user_ids: list[str], event: str, data: Any) -> None:
        manager = self._app.sio.manager
        rooms = [user_channel(u) for u in user_ids]
        if isinstance(manager, EncodeOnceEmit):
            await EncodeOnceEmit.emit(manager, event, data, namespace="/", room=rooms)
        else:  # a stock manager: still local-first, one emit per batch
            await manager.emit(event, data, namespace="/", room=rooms)


def setup(app: web.Application, socket_app: SocketApp) -> None:
    app.router.add_routes(routes)

    @socket_app.event("lucky:enter", EnterIn)
    async def enter(sid: str, who: Principal, p: EnterIn) -> dict[str, Any]:
        """Enter a lucky bag."""
        return await socket_app.svc.fans.lucky.enter(who, p.bag_id)

    def start(svc: Any) -> None:
        svc.fans.notify.delivery = SocketDelivery(socket_app)

    socket_app.on_start.append(start)
