"""HTTP routes and Socket.IO events of chat, moderation and reports.

Parse (strict pydantic models), authenticate, call ``svc.chat`` / ``svc.moderation``, reply.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from live.core.auth import Principal
from live.core.errors import Invalid
from live.transport.http import api, body, json_response, principal, query, services
from live.transport.schemas import HeldOut, Obj, ReportOut, ResolvedOut
from live.transport.sio import SocketApp

routes = web.RouteTableDef()

ID = Field(min_length=1, max_length=64)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ChatSendIn(_In):
    room_id: str = ID
    # A hard bound at the edge; the configured limit (chat_max_len) is checked after normalising.
    text: str = Field(min_length=1, max_length=4000)


class MuteIn(_In):
    user_id: str = ID
    seconds: int = Field(ge=0, le=30 * 86400)


class UserRefIn(_In):
    user_id: str = ID


class SlowModeIn(_In):
    seconds: int = Field(ge=0, le=3600)


class ReportIn(_In):
    target: Literal["message", "room", "card", "user"]
    target_id: str = ID
    # Not blank: at least one non-space character (JSON Schema patterns search, not match).
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")


class ResolveIn(_In):
    action: Literal["dismiss", "delete", "mute", "ban"]
    seconds: int | None = Field(None, ge=1, le=30 * 86400)


class HeldQuery(_In):
    status: Literal["held", "approved", "rejected", "expired", "all"] = "held"
    limit: int = Field(100, ge=1, le=500, strict=False)  # query strings are text


class ReportsQuery(_In):
    status: Literal["open", "resolved", "all"] = "open"
    limit: int = Field(100, ge=1, le=500, strict=False)  # query strings are text


class ActionsQuery(_In):
    limit: int = Field(100, ge=1, le=500, strict=False)
    room_id: str | None = Field(None, min_length=1, max_length=64)


def _room(request: web.Request) -> str:
    return request.match_info["room_id"]


# --- room moderation (the room's streamer or a moderator) ------------------------------------------
@routes.post("/api/rooms/{room_id}/mute")
@api(summary="Mute a user in the room", tag="moderation", request=MuteIn, responses={200: Obj})
async def mute(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, MuteIn)
    return json_response(await services(request).moderation.mute(who, _room(request), p.user_id, p.seconds))


@routes.post("/api/rooms/{room_id}/ban")
@api(summary="Ban a user from the room", tag="moderation", request=UserRefIn, responses={200: Obj})
async def ban(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, UserRefIn)
    return json_response(await services(request).moderation.ban(who, _room(request), p.user_id))


@routes.post("/api/rooms/{room_id}/unban")
@api(summary="Lift a ban", tag="moderation", request=UserRefIn, responses={200: Obj})
async def unban(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, UserRefIn)
    return json_response(await services(request).moderation.unban(who, _room(request), p.user_id))


@routes.post("/api/rooms/{room_id}/slowmode")
@api(summary="Set the room's slow mode", tag="moderation", request=SlowModeIn, responses={200: Obj})
async def slowmode(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, SlowModeIn)
    return json_response(await services(request).moderation.set_slowmode(who, _room(request), p.seconds))


@routes.get("/api/rooms/{room_id}/moderation")
@api(summary="The room's mutes, bans and slow mode", tag="moderation", responses={200: Obj})
async def room_moderation(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).moderation.room_state(who, _room(request)))


@routes.delete("/api/messages/{msg_id}")
@api(summary="Delete a chat message", tag="moderation", responses={200: Obj})
async def delete_message(request: web.Request) -> web.Response:
    who = principal(request)
    msg_id = request.match_info["msg_id"]
    if len(msg_id) > 64:
        raise Invalid("message id too long")
    return json_response(await services(request).moderation.delete_message(who, msg_id))


# --- reports (any user files; moderators review) ------------------------------------------------------
@routes.post("/api/reports")
@api(summary="Report a message, room, card or user", tag="reports", request=ReportIn, responses={201: ReportOut})
async def create_report(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ReportIn)
    return json_response(await services(request).moderation.report(who, p.target, p.target_id, p.reason.strip()),
                         status=201)


@routes.get("/api/reports")
@api(summary="Reports (moderators)", tag="reports", query=ReportsQuery, responses={200: list[ReportOut]})
async def list_reports(request: web.Request) -> web.Response:
    who = principal(request)
    q = query(request, ReportsQuery)
    return json_response(await services(request).moderation.reports(who, q.status, q.limit))


@routes.post("/api/reports/{report_id}/resolve")
@api(summary="Resolve a report (moderators)", tag="reports", request=ResolveIn, responses={200: ResolvedOut})
async def resolve_report(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ResolveIn)
    return json_response(await services(request).moderation.resolve(
        who, request.match_info["report_id"], p.action, p.seconds))


# --- chat held by the guard for review (moderators) -----------------------------------------------
@routes.get("/api/moderation/held")
@api(summary="Chat held by the guard (moderators)", tag="moderation", query=HeldQuery, responses={200: list[HeldOut]})
async def list_held(request: web.Request) -> web.Response:
    who = principal(request)
    q = query(request, HeldQuery)
    return json_response(await services(request).moderation.held(who, q.status, q.limit))


@routes.post("/api/moderation/held/{held_id}/approve")
@api(summary="Release a held message", tag="moderation", responses={200: HeldOut})
async def approve_held(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).moderation.decide_held(who, request.match_info["held_id"], "approve"))


@routes.post("/api/moderation/held/{held_id}/reject")
@api(summary="Reject a held message", tag="moderation", responses={200: HeldOut})
async def reject_held(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).moderation.decide_held(who, request.match_info["held_id"], "reject"))


@routes.get("/api/moderation/actions")
@api(summary="The moderation log (moderators)", tag="moderation", query=ActionsQuery, responses={200: list[Obj]})
async def actions(request: web.Request) -> web.Response:
    who = principal(request)
    q = query(request, ActionsQuery)
    return json_response(await services(request).moderation.actions(who, limit=q.limit, room_id=q.room_id))


@routes.get("/api/moderation/stats")
@api(summary="Moderation counters (moderators)", tag="moderation", responses={200: Obj})
async def stats(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).moderation.stats(who))


def setup(app: web.Application, socket_app: SocketApp) -> None:
    """Add the chat routes and the ``chat:send`` event."""
    app.router.add_routes(routes)

    @socket_app.event("chat:send", ChatSendIn)
    async def send(sid: str, who: Principal, p: ChatSendIn) -> dict[str, Any]:
        """Send a chat message to a room; the ack carries the stored message."""
        return {"message": await socket_app.svc.chat.send(sid, who, p.room_id, p.text)}
