"""Governance transport: shop applications, violations, standing, the shop ledger, appeals,
and the public disclosure (公示). Parses, authorises the caller's identity, calls the domain."""

from __future__ import annotations

import re
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from live.core.errors import Invalid, LiveError
from live.governance.standing import KINDS
from live.transport.http import bearer, body, json_response, principal, services
from live.transport.routes_aftersales import NoteIn, Strict, cents
from live.transport.sio import SocketApp

routes = web.RouteTableDef()
APPLICATION_STATUSES = ("pending", "approved", "rejected")
APPEAL_STATUSES = ("pending", "upheld", "overturned")
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


def _status(request: web.Request, allowed: tuple[str, ...]) -> str | None:
    status = request.query.get("status") or None
    if status is not None and status not in allowed:
        raise Invalid(f"status: one of {', '.join(allowed)}")
    return status


# --- admission -------------------------------------------------------------------------------
@routes.post("/api/shop/application")
async def apply(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ApplicationIn)
    out = await services(request).governance.apply(who, p.shop_name.strip(), p.category.strip(), p.license_image)
    return json_response(out, status=201)


@routes.get("/api/shop/application")
async def my_application(request: web.Request) -> web.Response:
    return json_response(await services(request).governance.my_application(principal(request)))


@routes.get("/api/moderation/applications")
async def applications(request: web.Request) -> web.Response:
    who = principal(request)
    items = await services(request).governance.applications(who, _status(request, APPLICATION_STATUSES))
    return json_response({"items": items})


@routes.post(r"/api/moderation/applications/{app_id}/{decision:approve|reject}")
async def decide_application(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, NoteIn)
    decision = "approved" if request.match_info["decision"] == "approve" else "rejected"
    return json_response(await services(request).governance.decide_application(
        who, request.match_info["app_id"], decision, p.note))


# --- violations and standing -------------------------------------------------------------------
@routes.post("/api/moderation/violations")
async def record_violation(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, ViolationIn)
    assert p.kind in KINDS
    out = await services(request).governance.record(who, p.user_id, p.kind, p.note, p.points, p.deduction)
    return json_response(out, status=201)


@routes.get("/api/shops/{user_id}/standing")
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
async def ledger(request: web.Request) -> web.Response:
    return json_response(await services(request).governance.ledger_of(principal(request)))


@routes.post("/api/shop/deposit")
async def deposit(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AmountIn)
    return json_response(await services(request).governance.deposit(who, p.amount), status=201)


@routes.post("/api/shop/payouts")
async def payout(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AmountIn)
    return json_response(await services(request).governance.payout(who, p.amount), status=201)


# --- appeals -----------------------------------------------------------------------------------
@routes.post("/api/appeals")
async def appeal(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AppealIn)
    return json_response(await services(request).governance.appeal(who, p.violation_id, p.text.strip()),
                         status=201)


@routes.get("/api/moderation/appeals")
async def appeals(request: web.Request) -> web.Response:
    who = principal(request)
    return json_response({"items": await services(request).governance.appeals(
        who, _status(request, APPEAL_STATUSES))})


@routes.post(r"/api/moderation/appeals/{appeal_id}/{decision:uphold|overturn}")
async def rule_appeal(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, NoteIn)
    return json_response(await services(request).governance.rule_appeal(
        who, request.match_info["appeal_id"], request.match_info["decision"], p.note))


# --- public disclosure ---------------------------------------------------------------------------
@routes.get("/api/transparency")
async def transparency(request: web.Request) -> web.Response:
    gov = services(request).governance
    month = request.query.get("month") or gov.now().strftime("%Y-%m")
    if not MONTH.match(month) or month < "2000-01":
        raise Invalid("month: YYYY-MM")
    if month > gov.now().strftime("%Y-%m"):
        raise Invalid("month: not in the future")
    return json_response(await gov.transparency.month(month))


def setup(app: web.Application, socket_app: SocketApp) -> None:
    app.router.add_routes(routes)
