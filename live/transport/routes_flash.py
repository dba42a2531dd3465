"""Flash-buy transport: cards, buys (HTTP and Socket.IO), orders, audit, product images."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import BaseModel, ConfigDict, Field, field_validator

from live.commerce.flashbuy import Reply
from live.core.auth import Principal
from live.core.errors import Invalid, NotFound
from live.transport.http import (
    api,
    body,
    body_deadline,
    decimal_amount,
    json_response,
    parse,
    principal,
    read_json,
    services,
)
from live.transport.schemas import BuyOut, CardOut, Obj, OrderOut
from live.transport.sio import SocketApp

routes = web.RouteTableDef()
REQUEST_ID = r"^[A-Za-z0-9_\-:.]{1,64}$"
EPOCH_LIMIT_S = 1e11  # about year 5138: any epoch-seconds value past this is not a date
MAX_SCHEDULE = timedelta(days=366)


class BuyIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    card_id: str = Field(min_length=1, max_length=64)
    qty: int = Field(1)
    request_id: str = Field(pattern=REQUEST_ID)


class HttpBuyIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    qty: int = Field(1)
    request_id: str = Field(pattern=REQUEST_ID)


class RestockIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    add: int = Field(ge=1)  # the upper bound is the max_stock setting, checked by the service


class AuditIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    order_ids: list[str] = Field(default_factory=list, max_length=1_000_000)


class CardIn(BaseModel):
    """A listing: price, stock and an image (upload or snapshot); the rest optional."""

    model_config = ConfigDict(extra="ignore")
    price: Decimal
    stock: int
    snapshot: bool = False
    title: str = Field("", max_length=120)
    code: str = Field("", max_length=64)
    limit_per_user: int | None = Field(None, ge=1, le=1000)
    starts_at: datetime | None = None
    duration_s: int | None = Field(None, ge=1, le=7 * 24 * 3600)
    audience: str = Field("all", pattern="^(all|followers)$")  # fans: followers-only sale

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, v: Any) -> Decimal:
        return decimal_amount(v)

    @field_validator("stock", "limit_per_user", "duration_s", mode="before")
    @classmethod
    def _integer(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool | float):
            raise ValueError("an integer")
        if isinstance(v, str):
            if not re.fullmatch(r"\s*[0-9]{1,9}\s*", v):  # ASCII digits: \d takes "١٢" too
                raise ValueError("an integer")
            return int(v)
        return v

    @field_validator("stock")
    @classmethod
    def _stock(cls, v: int) -> int:
        if v < 1:
            raise ValueError("at least 1")
        return v

    @field_validator("snapshot", mode="before")
    @classmethod
    def _flag(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.lower() in ("true", "1", "yes", "on"):
                return True
            if v.lower() in ("false", "0", "no", "off", ""):
                return False
            raise ValueError("true or false")
        if not isinstance(v, bool):
            raise ValueError("true or false")
        return v

    @field_validator("starts_at", mode="before")
    @classmethod
    def _when(cls, v: Any) -> Any:
        if v in (None, ""):
            return None
        if isinstance(v, int | float) and not isinstance(v, bool):
            if not -EPOCH_LIMIT_S < v < EPOCH_LIMIT_S:  # 1e20, 2**63, inf: not a time
                raise ValueError("out of range")
            try:
                return datetime.fromtimestamp(v, UTC)  # epoch seconds
            except (OverflowError, OSError, ValueError) as e:
                raise ValueError("out of range") from e
        return v

    @field_validator("starts_at")
    @classmethod
    def _when_range(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        # A sale starts within a year of now: 9999-12-31 (or year 1) would overflow the arithmetic
        # on it later (ends_at, timers) and is never meant.
        now = datetime.now(UTC)
        if not now - MAX_SCHEDULE <= v <= now + MAX_SCHEDULE:
            raise ValueError("must be within a year of now")
        return v


async def _card_form(request: web.Request) -> tuple[CardIn, bytes | None]:
    if request.content_type.startswith("multipart/"):
        try:
            async with body_deadline(request):
                fields, image = await _multipart(request)
        except (ValueError, AssertionError, LookupError, RuntimeError, BadHttpMessage) as e:
            # aiohttp's reader on a body without a (closing) boundary, cut short, or not UTF-8
            # (UnicodeDecodeError is a ValueError; LookupError: an unknown charset).
            raise Invalid(f"malformed multipart body: {type(e).__name__}") from None
        return parse(CardIn, fields), image
    data = await read_json(request)
    if isinstance(data, dict) and "image" in data:
        raise Invalid("image: send the photo as a multipart upload (field 'image'), or use \"snapshot\": true")
    return parse(CardIn, data), None


async def _multipart(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    max_bytes = services(request).settings.max_upload_bytes
    fields: dict[str, Any] = {}
    image: bytes | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise Invalid("nested multipart is not supported")
        name = part.name or ""
        if name == "image":
            data = bytearray()
            while chunk := await part.read_chunk(65536):
                data += chunk
                if len(data) > max_bytes:
                    raise Invalid(f"image: larger than {max_bytes // (1024 * 1024)} MiB")
            image = bytes(data)
        elif name:
            text = await part.text()
            if len(text) > 1000:
                raise Invalid(f"{name}: too long")
            fields[name] = text
    return fields, image


@routes.post("/api/rooms/{room_id}/cards")
@api(summary="List a product card (JSON, or multipart with an image)", tag="flash", request=CardIn, form=True,
     responses={201: CardOut})
async def create_card(request: web.Request) -> web.Response:
    who = principal(request)
    form, image = await _card_form(request)
    card = await services(request).flash.create_card(
        who, request.match_info["room_id"], price=form.price, stock=form.stock, image=image,
        snapshot=form.snapshot, title=form.title.strip(), code=form.code.strip(),
        limit_per_user=form.limit_per_user, starts_at=form.starts_at, duration_s=form.duration_s,
        audience=form.audience)
    return json_response(card, status=201)


@routes.get("/api/cards/{card_id}")
@api(summary="A card", tag="flash", auth="none", responses={200: CardOut})
async def get_card(request: web.Request) -> web.Response:
    return json_response(await services(request).flash.card(request.match_info["card_id"]))


@routes.post("/api/cards/{card_id}/pin")
@api(summary="Pin a card in its room", tag="flash", responses={200: CardOut})
async def pin(request: web.Request) -> web.Response:
    return json_response(await services(request).flash.pin(principal(request), request.match_info["card_id"]))


@routes.post("/api/cards/{card_id}/close")
@api(summary="Close a card's sale", tag="flash", responses={200: CardOut})
async def close(request: web.Request) -> web.Response:
    return json_response(await services(request).flash.close(principal(request), request.match_info["card_id"]))


@routes.post("/api/cards/{card_id}/restock")
@api(summary="Add stock to a card", tag="flash", request=RestockIn, responses={200: Obj})
async def restock(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, RestockIn)
    return json_response(await services(request).flash.restock(who, request.match_info["card_id"], p.add))


@routes.post("/api/cards/{card_id}/buy")
@api(summary="Buy (one tap); idempotent per request_id", tag="flash", request=HttpBuyIn, responses={200: BuyOut})
async def buy(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, HttpBuyIn)
    result = await services(request).flash.buy(who, request.match_info["card_id"], p.qty, p.request_id)
    return json_response({"ok": True, **result})


@routes.post("/api/cards/{card_id}/audit")
@api(summary="Check order ids against a card's ledger", tag="flash", request=AuditIn, responses={200: Obj})
async def audit(request: web.Request) -> web.Response:
    who = principal(request)
    p = await body(request, AuditIn)
    return json_response(await services(request).orders.audit(who, request.match_info["card_id"], p.order_ids))


@routes.get("/api/cards/{card_id}/reconcile")
@api(summary="Redis and SQL numbers of a card, side by side", tag="flash", responses={200: Obj})
async def reconcile(request: web.Request) -> web.Response:
    who = principal(request)
    svc = services(request)
    card_id = request.match_info["card_id"]
    if not who.is_moderator:
        await svc.flash.owned(who, card_id)  # the card's streamer only
    return json_response(await svc.orders.reconcile(card_id))


@routes.get("/api/orders/{order_id}")
@api(summary="An order (its buyer, the card's streamer or a moderator)", tag="orders", responses={200: OrderOut})
async def get_order(request: web.Request) -> web.Response:
    return json_response(await services(request).orders.get(principal(request), request.match_info["order_id"]))


@routes.get("/api/me/orders")
@api(summary="The caller's orders", tag="orders", responses={200: list[OrderOut]})
async def my_orders(request: web.Request) -> web.Response:
    return json_response(await services(request).orders.mine(principal(request)))


@routes.post("/api/orders/{order_id}/pay")
@api(summary="Pay an order", tag="orders", responses={200: OrderOut})
async def pay(request: web.Request) -> web.Response:
    # The simulated payment settles through the provider callback's path (live.commerce.payments).
    pay = services(request).aftersales.payments
    return json_response(await pay.pay_simulated(principal(request), request.match_info["order_id"]))


@routes.post("/api/orders/{order_id}/cancel")
@api(summary="Cancel an unpaid order (stock goes back)", tag="orders", responses={200: OrderOut})
async def cancel(request: web.Request) -> web.Response:
    # v2: a paid order not yet shipped is refunded at once (live.commerce.fulfilment).
    fulfilment = services(request).aftersales.fulfilment
    return json_response(await fulfilment.cancel(principal(request), request.match_info["order_id"]))


@routes.get("/media/{name}")
@api(summary="A product image", tag="flash", auth="none", media="image/jpeg")
async def media(request: web.Request) -> web.StreamResponse:
    data = await services(request).storage.get(request.match_info["name"])
    if data is None:
        raise NotFound("no such image")
    # Names are content-unique (a new card gets a new id): cache forever.
    return web.Response(body=data, content_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


def setup(app: web.Application, socket_app: SocketApp) -> None:
    app.router.add_routes(routes)

    def buy_now(sid: str, who: Principal, p: BuyIn, reply: Reply) -> None:
        socket_app.svc.flash.buy_now(who, p.card_id, p.qty, p.request_id, reply)

    @socket_app.event("flash:buy", BuyIn, concurrent=True, now=buy_now)
    async def sio_buy(sid: str, who: Principal, p: BuyIn) -> dict[str, Any]:
        """Buy (one tap); the ack carries the order and the stock left."""
        return await socket_app.svc.flash.buy(who, p.card_id, p.qty, p.request_id)
