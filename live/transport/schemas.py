"""Response models: the shapes the domain ``*_view`` functions return, for the OpenAPI
document (``live.transport.openapi``) and the tests that check real responses against it.

They describe, they do not filter: handlers still send the view dicts, and every model
allows extra keys because domains add fields to shared views (``RoomService.extras``);
the contract only ever extends. Fields listed here are the ones always present.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Out):
    code: str  # the contract's error code (the document lists them as an enum)
    message: str


class Error(_Out):
    """Every error, HTTP or Socket.IO ack: ``{"error": {"code", "message", ...}}``."""

    error: ErrorBody


class UserOut(_Out):
    id: str
    name: str
    role: str


class SessionOut(_Out):
    """A signed-in caller: the bearer token and who it is."""

    token: str
    user: UserOut


class MeOut(_Out):
    user: UserOut


class StreamerRef(_Out):
    id: str
    name: str


class CardOut(_Out):
    id: str
    room_id: str
    title: str
    code: str
    image_url: str
    thumb_url: str
    price: str
    stock: int
    left: int
    sold: int
    limit_per_user: int | None
    status: str
    starts_at: str | None
    ends_at: str | None
    audience: str


class RoomOut(_Out):
    id: str
    title: str
    streamer: StreamerRef
    status: str
    viewers: int
    cards: list[CardOut]
    pinned_card_id: str | None
    created_at: str | None
    started_at: str | None


class OrderOut(_Out):
    id: str
    card_id: str
    user_id: str
    qty: int
    amount: str
    status: str
    created_at: str | None
    pay_by: str | None
    request_id: str | None


class CaseEntry(_Out):
    status: str
    by: str
    at: str
    note: str


class CaseOut(_Out):
    """An after-sales case (``live.commerce.postsale.case_view``)."""

    id: str
    order_id: str
    user_id: str
    streamer_id: str
    kind: str
    status: str
    reason: str
    amount: str
    deadline: str | None
    created_at: str
    resolved_at: str | None
    return_shipment: dict[str, str] | None
    history: list[CaseEntry]


class BuyOut(_Out):
    ok: bool
    order: OrderOut
    left: int


class WebhookOut(_Out):
    id: str
    url: str
    events: list[str]
    shop_id: str | None
    created_at: str | None
    previous_secret_valid_until: str | None


class ReportOut(_Out):
    """A report (``live.community.moderation.render_report``)."""

    id: str
    reporter_id: str
    target: str
    target_id: str
    reason: str
    status: str
    resolution: str | None
    resolved_by: str | None
    created_at: str | None
    resolved_at: str | None


class ResolvedOut(_Out):
    report: ReportOut
    result: dict[str, object]


class HeldOut(_Out):
    """A chat message held by the guard (``render_held``); ``score`` and ``signals`` explain why."""

    id: str
    room_id: str
    user_id: str
    text: str
    status: str
    decided_by: str | None
    created_at: str | None
    decided_at: str | None


class BagOut(_Out):
    """A lucky bag (``live.fans.lucky.LuckyService.view``): ``winners`` is the number while open,
    the winners' ids once drawn (with the seed and entrants, to verify the draw)."""

    id: str
    room_id: str
    title: str
    prize: str
    winners: int | list[str]
    winners_count: int
    ends_at: str | None
    condition: str
    keyword: str | None
    allow_guests: bool
    commitment: str
    status: str
    created_at: str | None


class NotificationOut(_Out):
    id: str
    kind: str
    room_id: str | None
    title: str
    streamer: StreamerRef
    at: str | None


class NotificationsOut(_Out):
    items: list[NotificationOut]
    unread: int


class Health(_Out):
    status: str


class Obj(_Out):
    """A JSON object whose fields this document does not itemise (yet)."""

