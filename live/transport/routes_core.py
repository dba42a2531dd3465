"""HTTP routes of the foundation: health, metrics, identity, rooms."""

from __future__ import annotations

import asyncio
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from live.core.auth import USERNAME_RE, canonical_name
from live.core.errors import Forbidden, RateLimited, Unauthorized
from live.core.metrics import CONTENT_TYPE_LATEST
from live.transport.fanout import LiveSocketServer
from live.transport.http import api, bearer, body, json_response, principal, services
from live.transport.schemas import Health, MeOut, Obj, RoomOut, SessionOut, UserOut

routes = web.RouteTableDef()


class GuestIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str = Field(min_length=1, max_length=32)


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    username: str = Field(min_length=3, max_length=32, pattern=USERNAME_RE.pattern)
    password: str = Field(min_length=8, max_length=256)
    role: str = Field("viewer", pattern="^(viewer|streamer)$")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: str = Field(pattern="^(viewer|streamer|moderator)$")


class RoomIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    title: str = Field(min_length=1, max_length=120)
    scheduled_at: datetime | None = Field(None, strict=False)  # fans: when the show is announced to start (reminders)


@routes.get("/healthz")
@api(summary="Liveness: Redis, the database and every domain check", tag="ops", auth="none", responses={200: Health})
async def healthz(request: web.Request) -> web.Response:
    svc = services(request)

    results = await svc.check_backends()
    ok = all(results.values())
    if ok:
        loop = "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
        # Which parts of the Socket.IO fast path run (live/transport/fanout.py).
        sio = getattr(svc.pusher, "sio", None)
        fast = sio.fast.parts() if isinstance(sio, LiveSocketServer) else {}
        info = dict(zip(svc.info, await asyncio.gather(*(fn() for fn in svc.info.values())), strict=True))
        return json_response({"status": "ok", "event_loop": loop, "fast_path": fast, **info})
    return json_response({"status": "unavailable", "checks": results,
                          "error": {"code": "UNAVAILABLE", "message": "a backend does not answer"}}, status=503)


@routes.get("/metrics")
@api(summary="Prometheus metrics (text exposition format)", tag="ops", auth="none", media="text/plain")
async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=services(request).metrics.render())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


# --- identity ---------------------------------------------------------------------------
def client_address(request: web.Request) -> str:
    """The peer's address (per-address limits). Behind a reverse proxy every request comes from
    the proxy: limit there too (README, "Limits")."""
    return request.remote or "unknown"


async def throttle(request: web.Request, what: str, rate: float, burst: int, *subjects: str) -> None:
    """A token from each subject's ``what`` bucket (shared by every process), or RATE_LIMITED."""
    svc = services(request)
    for subject in subjects:
        try:
            await svc.ratelimit.take(subject, what, rate, burst)
        except RateLimited as e:
            kind = subject.split(":", 1)[0]
            raise RateLimited(e.message, limit=f"{what}_per_{kind}") from None


@routes.post("/api/auth/guest")
@api(summary="Sign in as a guest", tag="identity", auth="none", request=GuestIn, responses={200: SessionOut})
async def guest(request: web.Request) -> web.Response:
    svc = services(request)
    p = await body(request, GuestIn)
    try:
        caller = principal(request) if bearer(request) else None
    except Unauthorized:
        caller = None  # a guest needs no token; a bad one is ignored here as before
    if caller is None or not caller.is_moderator:  # an operator's load test mints with its token
        s = svc.settings
        await throttle(request, "guest", s.guest_rate_per_s, s.guest_rate_burst, f"addr:{client_address(request)}")
    return json_response(await svc.auth.guest(p.name.strip() or "guest"))


@routes.post("/api/auth/register")
@api(summary="Register an account", tag="identity", auth="none", request=RegisterIn, responses={201: SessionOut})
async def register(request: web.Request) -> web.Response:
    svc = services(request)
    p = await body(request, RegisterIn)
    s = svc.settings
    await throttle(request, "login", s.login_rate_per_s, s.login_rate_burst, f"addr:{client_address(request)}")
    return json_response(await svc.auth.register(p.username, p.password, p.role), status=201)


@routes.post("/api/auth/login")
@api(summary="Sign in with a password", tag="identity", auth="none", request=LoginIn, responses={200: SessionOut})
async def login(request: web.Request) -> web.Response:
    svc = services(request)
    p = await body(request, LoginIn)
    s = svc.settings
    # Per address (one client trying many accounts) and per account (many clients trying one).
    await throttle(request, "login", s.login_rate_per_s, s.login_rate_burst, f"addr:{client_address(request)}",
                   f"account:{canonical_name(p.username)}")
    return json_response(await svc.auth.login(p.username, p.password))


@routes.get("/api/me")
@api(summary="Who the token belongs to", tag="identity", responses={200: MeOut})
async def me(request: web.Request) -> web.Response:
    return json_response({"user": principal(request).public()})


@routes.post("/api/auth/refresh")
@api(summary="A fresh token for the caller", tag="identity", responses={200: SessionOut})
async def refresh(request: web.Request) -> web.Response:
    return json_response(await services(request).auth.refresh(principal(request)))


@routes.post("/api/users/{user_id}/role")
@api(summary="Change a user's role (moderators)", tag="identity", request=RoleIn, responses={200: UserOut})
async def set_role(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, RoleIn)
    return json_response(await services(request).auth.set_role(who, request.match_info["user_id"], p.role))


# --- rooms ---------------------------------------------------------------------------------
@routes.post("/api/rooms")
@api(summary="Create a room (streamers)", tag="rooms", request=RoomIn, responses={201: RoomOut})
async def create_room(request: web.Request) -> web.Response:
    who = principal(request)
    if who.role != "streamer":
        raise Forbidden("only streamers create rooms")
    p = await body(request, RoomIn)
    return json_response(await services(request).rooms.create(who, p.title.strip(), p.scheduled_at), status=201)


@routes.get("/api/rooms")
@api(summary="Live rooms", tag="rooms", auth="none", responses={200: list[RoomOut]})
async def list_rooms(request: web.Request) -> web.Response:
    return json_response(await services(request).rooms.list_live())


@routes.get("/api/rooms/{room_id}")
@api(summary="A room's snapshot with its cards", tag="rooms", auth="none", responses={200: RoomOut})
async def get_room(request: web.Request) -> web.Response:
    return json_response(await services(request).rooms.snapshot(request.match_info["room_id"]))


@routes.post("/api/rooms/{room_id}/live")
@api(summary="Start the show (the room's streamer)", tag="rooms", responses={200: Obj})
async def go_live(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).rooms.go_live(who, request.match_info["room_id"]))


@routes.post("/api/rooms/{room_id}/end")
@api(summary="End the show (the room's streamer)", tag="rooms", responses={200: Obj})
async def end_room(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).rooms.end(who, request.match_info["room_id"]))
