"""Governance transport: shop applications, violations, standing, the shop ledger, appeals,
and the public disclosure (公示). Parses, authorises the caller's identity, calls the domain."""

from __future__ import annotations

import re
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from live.core.errors import Invalid, LiveError
from live.governance.standing import KINDS
from live.transport.http import api, bearer, body, json_response, principal, query, services
from live.transport.routes_aftersales import NoteIn, Strict, blank_is_none, cents
from live.transport.schemas import Obj
from live.transport.sio import SocketApp

routes = web.RouteTableDef()
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class ApplicationIn(Strict):
    shop_name: str = Field(min_length=1, max_length=64)
    category: str = Field(min_length=1, max_length=64)
    license_image: str | None = Field(None, max_length=8_000_000)


class ViolationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user_id: str = Field(min_length=1, max_length=32)
    kind: Literal["private_trading", "counterfeit", "misleading", "after_sales", "other"]
    note: str = Field("", max_length=500)
    points: int | None = Field(None, ge=0, le=1000)
    deduction: int | None = None

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, v: Any) -> Any:
        if isinstance(v, bool) or (v is not None and not isinstance(v, int)):
            raise ValueError("an integer")
        return v

    @field_validator("deduction", mode="before")
    @classmethod
    def _deduction(cls, v: Any) -> int | None:
        if v is None or v in (0, "0", "0.00"):
            return None if v is None else 0
        return cents(v)


class AmountIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    amount: int

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> int:
        return cents(v)


class AppealIn(Strict):
    violation_id: str = Field(min_length=1, max_length=32)
    text: str = Field(min_length=1, max_length=2000)


class ApplicationsQuery(Strict):
    status: Literal["pending", "approved", "rejected"] | None = None
    _status = field_validator("status", mode="before")(blank_is_none)


class AppealsQuery(Strict):
    status: Literal["pending", "upheld", "overturned"] | None = None
    _status = field_validator("status", mode="before")(blank_is_none)


class TransparencyQuery(Strict):
    month: str | None = Field(None, pattern=MONTH.pattern)  # absent: this month
    _month = field_validator("month", mode="before")(blank_is_none)


# --- admission -------------------------------------------------------------------------------
@routes.post("/api/shop/application")
@api(summary="Apply to open a shop", tag="governance", request=ApplicationIn, responses={201: Obj})
async def apply(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ApplicationIn)
    out = await services(request).governance.apply(who, p.shop_name.strip(), p.category.strip(), p.license_image)
    return json_response(out, status=201)


@routes.get("/api/shop/application")
@api(summary="The caller's shop application", tag="governance", responses={200: Obj})
async def my_application(request: web.Request) -> web.Response:
    return json_response(await services(request).governance.my_application(principal(request)))


@routes.get("/api/moderation/applications")
@api(summary="Shop applications (moderators)", tag="moderation", query=ApplicationsQuery, responses={200: Obj})
async def applications(request: web.Request) -> web.Response:
    who = principal(request)
    items = await services(request).governance.applications(who, query(request, ApplicationsQuery).status)
    return json_response({"items": items})


@routes.post(r"/api/moderation/applications/{app_id}/{decision:approve|reject}")
@api(summary="Approve or reject a shop application (moderators)",
     tag="moderation", request=NoteIn, responses={200: Obj})
async def decide_application(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, NoteIn)
    decision = "approved" if request.match_info["decision"] == "approve" else "rejected"
    return json_response(await services(request).governance.decide_application(
        who, request.match_info["app_id"], decision, p.note))


# --- violations and standing -------------------------------------------------------------------
@routes.post("/api/moderation/violations")
@api(summary="Record a violation against a shop (moderators)",
     tag="moderation", request=ViolationIn, responses={201: Obj})
async def record_violation(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ViolationIn)
    assert p.kind in KINDS
    out = await services(request).governance.record(who, p.user_id, p.kind, p.note, p.points, p.deduction)
    return json_response(out, status=201)


@routes.get("/api/shops/{user_id}/standing")
@api(summary="A shop's standing (public view without a token)", tag="governance", auth="optional", responses={200: Obj})
async def standing(request: web.Request) -> web.Response:
    svc = services(request)
    who = None
    if bearer(request):
        try:
            who = principal(request)
        except LiveError:
            who = None  # the public view
    return json_response(await svc.governance.standing_of(who, request.match_info["user_id"]))


# --- ledger ------------------------------------------------------------------------------------
@routes.get("/api/shop/ledger")
@api(summary="The shop's deposit and settlement ledger", tag="governance", responses={200: Obj})
async def ledger(request: web.Request) -> web.Response:
    return json_response(await services(request).governance.ledger_of(principal(request)))


@routes.post("/api/shop/deposit")
@api(summary="Pay into the shop's deposit", tag="governance", request=AmountIn, responses={201: Obj})
async def deposit(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AmountIn)
    return json_response(await services(request).governance.deposit(who, p.amount), status=201)


@routes.post("/api/shop/payouts")
@api(summary="Request a payout", tag="governance", request=AmountIn, responses={201: Obj})
async def payout(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AmountIn)
    return json_response(await services(request).governance.payout(who, p.amount), status=201)


# --- appeals -----------------------------------------------------------------------------------
@routes.post("/api/appeals")
@api(summary="Appeal a violation", tag="governance", request=AppealIn, responses={201: Obj})
async def appeal(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AppealIn)
    return json_response(await services(request).governance.appeal(who, p.violation_id, p.text.strip()),
                         status=201)


@routes.get("/api/moderation/appeals")
@api(summary="Appeals (moderators)", tag="moderation", query=AppealsQuery, responses={200: Obj})
async def appeals(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response({"items": await services(request).governance.appeals(
        who, query(request, AppealsQuery).status)})


@routes.post(r"/api/moderation/appeals/{appeal_id}/{decision:uphold|overturn}")
@api(summary="Uphold or overturn an appeal (moderators)", tag="moderation", request=NoteIn, responses={200: Obj})
async def rule_appeal(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, NoteIn)
    return json_response(await services(request).governance.rule_appeal(
        who, request.match_info["appeal_id"], request.match_info["decision"], p.note))


# --- public disclosure ---------------------------------------------------------------------------
@routes.get("/api/transparency")
@api(summary="The public disclosure of a month (公示)",
     tag="governance", auth="none", query=TransparencyQuery, responses={200: Obj})
async def transparency(request: web.Request) -> web.Response:
    gov = services(request).governance
    month = query(request, TransparencyQuery).month or gov.now().strftime("%Y-%m")
    if month < "2000-01":
        raise Invalid("month: YYYY-MM")
    if month > gov.now().strftime("%Y-%m"):
        raise Invalid("month: not in the future")
    return json_response(await gov.transparency.month(month))


def setup(app: web.Application, socket_app: SocketApp) -> None:
    app.router.add_routes(routes)
