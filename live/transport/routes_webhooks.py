"""HTTP routes of webhooks: subscribe, list, delete, rotate the secret, the delivery log, replay.

Parse (strict pydantic models), authenticate, call ``svc.webhooks``, reply.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from live.integrations.outbox import EVENTS
from live.transport.http import api, body, json_response, principal, query, services
from live.transport.schemas import Obj, WebhookOut
from live.transport.sio import SocketApp

routes = web.RouteTableDef()


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class WebhookIn(_In):
    url: str = Field(min_length=1, max_length=2048)
    # Names are checked against the known events by the service (INVALID names them).
    # The document lists them (the same EVENTS tuple the service checks against).
    events: list[str] = Field(min_length=1, max_length=len(EVENTS),
                              json_schema_extra={"items": {"type": "string", "enum": list(EVENTS)}})


class RotateIn(_In):
    # How long the old secret keeps signing; absent: the webhook_rotation_grace_s setting.
    grace_s: float | None = Field(None, ge=0, le=30 * 86400)


class DeliveriesQuery(_In):
    limit: int = Field(50, ge=1, le=500, strict=False)  # query strings are text


def _id(request: web.Request) -> str:
    return request.match_info["webhook_id"]


@routes.post("/api/webhooks")
@api(summary="Subscribe a URL to events (a streamer: its shop; a moderator: platform-wide)",
     tag="webhooks", request=WebhookIn, responses={201: WebhookOut})
async def create(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, WebhookIn)
    return json_response(await services(request).webhooks.create(who, p.url, p.events), status=201)


@routes.get("/api/webhooks")
@api(summary="The caller's webhooks", tag="webhooks", responses={200: list[WebhookOut]})
async def list_webhooks(request: web.Request) -> web.Response:
    return json_response(await services(request).webhooks.listing(principal(request)))


@routes.delete("/api/webhooks/{webhook_id}")
@api(summary="Delete a webhook", tag="webhooks", responses={200: Obj})
async def delete(request: web.Request) -> web.Response:
    return json_response(await services(request).webhooks.delete(principal(request), _id(request)))


@routes.post("/api/webhooks/{webhook_id}/rotate")
@api(summary="Rotate the signing secret (the old one stays valid for a grace period)",
     tag="webhooks", request=RotateIn, responses={200: Obj})
async def rotate(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, RotateIn)
    return json_response(await services(request).webhooks.rotate(who, _id(request), p.grace_s))


@routes.get("/api/webhooks/{webhook_id}/deliveries")
@api(summary="The delivery log, newest first, with each attempt",
     tag="webhooks", query=DeliveriesQuery, responses={200: list[Obj]})
async def deliveries(request: web.Request) -> web.Response:
    who = principal(request)
    q = query(request, DeliveriesQuery)
    return json_response(await services(request).webhooks.deliveries(who, _id(request), q.limit))


@routes.post("/api/webhooks/{webhook_id}/deliveries/{delivery_id}/replay")
@api(summary="Send a delivery's event again, as a new delivery", tag="webhooks", responses={202: Obj})
async def replay(request: web.Request) -> web.Response:
    who = principal(request)
    delivery_id = request.match_info["delivery_id"]
    return json_response(await services(request).webhooks.replay(who, _id(request), delivery_id), status=202)


def setup(app: web.Application, socket_app: SocketApp) -> None:
    app.router.add_routes(routes)
