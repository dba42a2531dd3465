"""Audit transport: the server's own figures over a sale window, for rehearsal verdicts
(moderators only, read-only). Parses, authorises, calls ``live.governance.audit``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from live.transport.http import api, body, json_response, principal, services
from live.transport.schemas import Obj
from live.transport.sio import SocketApp

routes = web.RouteTableDef()
Section = Literal["money", "deadlines", "webhooks", "chat"]
SECTIONS: tuple[Section, ...] = ("money", "deadlines", "webhooks", "chat")
Id = Annotated[str, Field(min_length=1, max_length=80)]


class AuditWindowIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    since: float = Field(ge=0, le=4_102_444_800)  # unix seconds (float or int), up to 2100
    card_ids: list[Id] = Field(default_factory=list, max_length=10_000)
    shop_ids: list[Id] = Field(default_factory=list, max_length=10_000)
    room_ids: list[Id] = Field(default_factory=list, max_length=10_000)
    webhook_ids: list[Id] = Field(default_factory=list, max_length=1_000)
    sections: list[Section] = Field(default_factory=lambda: list(SECTIONS), max_length=4)


@routes.post("/api/audit/window")
@api(summary="The server's audit of a sale window: money vs ledger, deadlines, webhooks, blocked chat "
             "(moderators)", tag="moderation", request=AuditWindowIn, responses={200: Obj})
async def audit_window(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AuditWindowIn)
    return json_response(await services(request).audit.window(
        who, since=datetime.fromtimestamp(p.since, UTC), card_ids=p.card_ids, shop_ids=p.shop_ids,
        room_ids=p.room_ids, webhook_ids=p.webhook_ids, sections=list(p.sections)))


def setup(app: web.Application, socket_app: SocketApp) -> None:
    app.router.add_routes(routes)
