"""After-sales transport: shipping, confirmation, cases, the moderators' disputes, and the
payment provider's callback. Parses, authorises the caller's identity, calls the domain."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from live.core.errors import NotFound
from live.transport.http import api, body, decimal_amount, json_response, parse, principal, query, read_json, services
from live.transport.schemas import CaseOut, Obj, OrderOut
from live.transport.sio import SocketApp

routes = web.RouteTableDef()


def cents(v: Any) -> int:
    """A money amount (decimal string or number, > 0, at most 2 decimals) in cents."""
    return int(decimal_amount(v) * 100)


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ShipIn(Strict):
    carrier: str = Field(min_length=1, max_length=64)
    tracking_no: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-_ ]+$")


class OpenIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    kind: Literal["refund_only", "return_refund"]
    # Not blank: at least one non-space character (JSON Schema patterns search, not match).
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")
    amount: int | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> int | None:
        return None if v is None else cents(v)


class NoteIn(Strict):
    note: str = Field("", max_length=500)


class RuleIn(Strict):
    decision: Literal["refund", "reject"]
    note: str = Field("", max_length=500)


class CallbackIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(min_length=1, max_length=64)
    transaction_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-:.]+$")
    amount: int
    status: Literal["succeeded"]

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> int:
        return cents(v)


def blank_is_none(v: Any) -> Any:
    return None if v == "" else v


class CardOrdersQuery(Strict):
    status: Literal["pending_payment", "paid", "shipped", "completed", "cancelled", "expired", "refunded"] | None = None
    _status = field_validator("status", mode="before")(blank_is_none)


class ShopCasesQuery(Strict):
    status: Literal["requested", "awaiting_return", "returned", "rejected", "escalated", "refunded",
                    "closed"] | None = None
    _status = field_validator("status", mode="before")(blank_is_none)


def _clean(s: str) -> str:
    return s.strip()


@routes.post("/api/orders/{order_id}/ship")
@api(summary="Ship a paid order (the card's streamer)", tag="after-sales", request=ShipIn, responses={200: OrderOut})
async def ship(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ShipIn)
    order = await services(request).aftersales.fulfilment.ship(who, request.match_info["order_id"],
                                                               _clean(p.carrier), _clean(p.tracking_no))
    return json_response(order)


class ShipAllIn(Strict):
    carrier: str = Field(min_length=1, max_length=64)
    tracking_prefix: str = Field("", max_length=40, pattern=r"^[A-Za-z0-9\-_]*$")


@routes.get("/api/cards/{card_id}/orders")
@api(summary="A card's orders (its streamer)", tag="after-sales", query=CardOrdersQuery,
     responses={200: list[OrderOut]})
async def card_orders(request: web.Request) -> web.Response:
    who = principal(request)
    status = query(request, CardOrdersQuery).status
    fulfilment = services(request).aftersales.fulfilment
    return json_response(await fulfilment.card_orders(who, request.match_info["card_id"], status))


@routes.post("/api/cards/{card_id}/ship-all")
@api(summary="Ship every paid order of a card", tag="after-sales", request=ShipAllIn, responses={200: Obj})
async def ship_all(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ShipAllIn)
    fulfilment = services(request).aftersales.fulfilment
    return json_response(await fulfilment.ship_all(who, request.match_info["card_id"], _clean(p.carrier),
                                                   p.tracking_prefix))


@routes.get("/api/cards/{card_id}/after-sales-stats")
@api(summary="After-sales numbers of a card", tag="after-sales", responses={200: Obj})
async def card_stats(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).aftersales.card_stats(who, request.match_info["card_id"]))


@routes.post("/api/orders/{order_id}/confirm")
@api(summary="Confirm receipt of an order (its buyer)", tag="after-sales", responses={200: OrderOut})
async def confirm(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).aftersales.fulfilment.confirm(who, request.match_info["order_id"]))


@routes.post("/api/orders/{order_id}/after-sales")
@api(summary="Open an after-sales case on an order", tag="after-sales", request=OpenIn, responses={201: CaseOut})
async def open_case(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, OpenIn)
    case = await services(request).aftersales.open(who, request.match_info["order_id"], p.kind, p.reason.strip(),
                                                   p.amount)
    return json_response(case, status=201)


# The steps of a case share one route: the step names the body it takes (a note, a return
# shipment, or a ruling).
NOTE_STEPS = ("approve", "reject", "receive", "escalate", "withdraw")


@routes.post("/api/after-sales/{case_id}/{step}")
@api(summary="A step of a case: approve, reject, receive, escalate, withdraw (a note), return (a shipment), "
             "rule (a ruling)", tag="after-sales", request=NoteIn | ShipIn | RuleIn, responses={200: CaseOut})
async def case_step(request: web.Request) -> web.Response:
    who = principal(request)
    step = request.match_info["step"]
    note, carrier, tracking_no = "", "", ""
    if step in NOTE_STEPS:
        note = (await body(request, NoteIn)).note
    elif step == "return":
        ship = await body(request, ShipIn)
        carrier, tracking_no = _clean(ship.carrier), _clean(ship.tracking_no)
    elif step == "rule":
        ruling = await body(request, RuleIn)
        step, note = f"rule_{ruling.decision}", ruling.note
    else:
        raise NotFound("no such after-sales step")
    case = await services(request).aftersales.step(who, request.match_info["case_id"], step, note.strip(),
                                                   carrier, tracking_no)
    return json_response(case)


@routes.get("/api/after-sales/{case_id}")
@api(summary="An after-sales case", tag="after-sales", responses={200: CaseOut})
async def get_case(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response(await services(request).aftersales.get(who, request.match_info["case_id"]))


@routes.get("/api/me/after-sales")
@api(summary="The caller's cases", tag="after-sales", responses={200: list[CaseOut]})
async def my_cases(request: web.Request) -> web.Response:
    return json_response(await services(request).aftersales.mine(principal(request)))


@routes.get("/api/shop/after-sales")
@api(summary="The shop's case queue (streamers)", tag="after-sales", query=ShopCasesQuery,
     responses={200: list[CaseOut]})
async def shop_cases(request: web.Request) -> web.Response:
    who = principal(request)
    status = query(request, ShopCasesQuery).status
    return json_response(await services(request).aftersales.shop_queue(who, status))


@routes.get("/api/moderation/disputes")
@api(summary="Escalated cases (moderators)", tag="moderation", responses={200: list[CaseOut]})
async def disputes(request: web.Request) -> web.Response:
    return json_response(await services(request).aftersales.disputes(principal(request)))


@routes.post("/api/payments/callback")
@api(summary="The payment provider's signed callback (X-Live-Signature)", tag="payments", auth="none",
     request=CallbackIn, responses={200: Obj})
async def payment_callback(request: web.Request) -> web.Response:
    """The provider's signed report (no bearer token: the signature is the credential)."""
    raw = await request.read()
    header = request.headers.get("X-Live-Signature", "")
    pay = services(request).aftersales.payments
    pay.check_signature(header, raw)
    p = parse(CallbackIn, await read_json(request))
    settled = await pay.settle(p.order_id, p.transaction_id, p.amount, owner="", strict=False)
    return json_response({"ok": True, "outcome": settled.outcome, "order": settled.order})


def setup(app: web.Application, socket_app: SocketApp) -> None:
    app.router.add_routes(routes)
