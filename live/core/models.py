"""SQL schema of every domain (SQLAlchemy 2 declarative). Alembic migrations mirror it.

Money is stored as integer cents. Ids are short time-sortable strings made by ``live.core.ids``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    # NFKC + casefold of username (live.core.auth.canonical_name): what makes "Alice" and "alice"
    # one name. NULL for guests, and for the later of two accounts that already collided before
    # migration 0003 (those sign in by their exact username).
    username_canonical: Mapped[str | None] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # viewer | streamer | moderator
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Room(Base):
    __tablename__ = "rooms"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(120))
    streamer_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # scheduled | live | ended
    pinned_card_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # fans: announced start


class Card(Base):
    __tablename__ = "cards"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id"), index=True)
    title: Mapped[str] = mapped_column(String(120), default="")
    code: Mapped[str] = mapped_column(String(64), default="")
    image_key: Mapped[str] = mapped_column(String(128))
    price_cents: Mapped[int] = mapped_column(Integer)
    stock: Mapped[int] = mapped_column(Integer)  # initial stock
    restocked: Mapped[int] = mapped_column(Integer, default=0)  # sum of restocks
    limit_per_user: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # scheduled | on_sale | sold_out | closed
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # fans: who may buy: all | followers; "lucky_bag" marks a lucky bag's prize (never on sale)
    audience: Mapped[str] = mapped_column(String(16), default="all", server_default="all")
    # Highest event seq of the card persisted (stock fencing, docs/operations.md): a Redis
    # holding a lower seq for the card has lost writes and must be rebuilt before selling.
    seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("card_id", "user_id", "request_id", name="uq_orders_request"),
        Index("ix_orders_card_status", "card_id", "status"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "<card id>-<12 hex>"
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"))
    room_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    qty: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # pending_payment | paid | cancelled | expired
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pay_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # --- after-sales (migration 0004): written by live.commerce.postsale ---
    # status also: shipped | completed | refunded. Money in cents: what the buyer was charged
    # and what went back (a shop ledger is built on these two).
    paid_amount_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refunded_amount_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # True once a refund put the units back on the card (cancelled/expired orders count as
    # returned by their status: see live.commerce.postsale.holds_stock).
    stock_returned: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_no: Mapped[str | None] = mapped_column(String(64))
    shipped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    after_sale_id: Mapped[str | None] = mapped_column(String(80))
    # Version of the Redis order this row mirrors: a replayed or late event never goes back.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    user_role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Report(Base):
    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reporter_id: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(16))  # message | room | card | user
    target_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | resolved
    resolution: Mapped[str | None] = mapped_column(String(64))
    resolved_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModerationAction(Base):
    """Audit log: every moderation action, by whom, on whom, why."""

    __tablename__ = "moderation_actions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(32))  # mute | ban | delete | slowmode | resolve | promote ...
    room_id: Mapped[str | None] = mapped_column(String(32), index=True)
    target_user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    target_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Violation(Base):
    """A piece of content the guard refused, with the penalty it earned."""

    __tablename__ = "violations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    room_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # chat | title | username | image
    reason: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")
    penalty: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Why the guard refused it (migration 0010): the detector and the normalised fragment it
    # matched, so that a moderator (and an appeal) sees the reason, not only the raw text.
    detector: Mapped[str] = mapped_column(String(32), default="", server_default="")
    fragment: Mapped[str] = mapped_column(String(200), default="", server_default="")


# --- fans (follows, go-live notifications, lucky bags) --------------------------------------
class Follow(Base):
    """One follower of one account; the pair is unique, so a follow is idempotent."""

    __tablename__ = "follows"
    follower_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    followee_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_follows_followee", "followee_id", "follower_id"),)


class FollowCount(Base):
    """Followers of an account, changed in the same transaction as the follow row it counts."""

    __tablename__ = "follow_counts"
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    followers: Mapped[int] = mapped_column(Integer, default=0)


class FanEvent(Base):
    """One row per go-live (or other broadcast) event: a follower's notifications are the events of
    the accounts they follow, joined at read time, so 100,000 followers cost one row, not 100,000."""

    __tablename__ = "fan_events"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # time-sortable
    kind: Mapped[str] = mapped_column(String(16))  # live
    streamer_id: Mapped[str] = mapped_column(String(32))
    room_id: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(120))
    streamer_name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_fan_events_streamer", "streamer_id", "id"), Index("ix_fan_events_room", "room_id"))


class RoomReminder(Base):
    """A viewer asked to be told when a scheduled room goes live (without following)."""

    __tablename__ = "room_reminders"
    room_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NotifyCursor(Base):
    """Per user: notifications with an id up to ``read_upto`` are read."""

    __tablename__ = "notify_cursors"
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    read_upto: Mapped[str] = mapped_column(String(32))


class LuckyBag(Base):
    """A lucky bag (福袋): committed seed when opened, drawn exactly once (status moves
    ``open`` → ``drawn`` by one conditional UPDATE)."""

    __tablename__ = "lucky_bags"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(32), index=True)
    streamer_id: Mapped[str] = mapped_column(String(32), index=True)
    title: Mapped[str] = mapped_column(String(120))
    prize: Mapped[str] = mapped_column(String(120))
    winners: Mapped[int] = mapped_column(Integer)
    condition: Mapped[str] = mapped_column(String(16))  # present | follower | keyword
    keyword: Mapped[str | None] = mapped_column(String(64))
    allow_guests: Mapped[bool] = mapped_column(Boolean, default=False)
    seed: Mapped[str] = mapped_column(String(64))  # hex; secret until drawn
    commitment: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | drawn
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    drawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    entrants: Mapped[list | None] = mapped_column(JSON)
    winner_ids: Mapped[list | None] = mapped_column(JSON)
    prize_card_id: Mapped[str | None] = mapped_column(String(32))


# --- guard: held messages and moderator labels ---------------------------------------------------


class HeldMessage(Base):
    """A chat message the guard was unsure about: shown only to its author until a moderator
    approves (shown to the room) or rejects it. Decided rows are the guard's labelled data:
    ``approved`` = ordinary chat, ``rejected`` = private trading (``live.community.guard``)."""

    __tablename__ = "held_messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the chat message id
    room_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    text: Mapped[str] = mapped_column(Text)
    message: Mapped[dict] = mapped_column(JSON)  # the chat message as it will be shown if approved
    score: Mapped[float] = mapped_column(Float)
    signals: Mapped[list] = mapped_column(JSON)  # [[kind, fragment], ...] strongest first
    status: Mapped[str] = mapped_column(String(16), index=True)  # held | approved | rejected | expired
    decided_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
# --- after-sales (migration 0004) -----------------------------------------------------------
class AfterSaleCase(Base):
    """A buyer's after-sales case on one order (refund only, or return and refund)."""

    __tablename__ = "after_sale_cases"
    __table_args__ = (Index("ix_after_sale_cases_streamer_status", "streamer_id", "status"),)
    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # "<order id>-c<n>"
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    card_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)  # the buyer
    streamer_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # refund_only | return_refund
    # requested | awaiting_return | returned | rejected | escalated | refunded | closed
    status: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str] = mapped_column(String(500))
    amount_cents: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    return_carrier: Mapped[str | None] = mapped_column(String(64))
    return_tracking_no: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)


class AfterSaleStep(Base):
    """One step of a case's history: who moved it to which status, when, with what note."""

    __tablename__ = "after_sale_steps"
    case_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    by: Mapped[str] = mapped_column(String(32))  # a user id, or "system" for a deadline
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(String(500), default="")


class Payment(Base):
    """Every payment the provider reported, once per transaction, and what became of it."""

    __tablename__ = "payments"
    transaction_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # paid | refunded (late or duplicate payment)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- integrations: webhooks (live.integrations) ----------------------------------------------------
class OutboxEvent(Base):
    """An event written in the same transaction as the change it reports (so it exists iff the
    change committed), later fanned out to the matching webhooks as deliveries."""

    __tablename__ = "outbox"
    # Never reuse a seq on SQLite, even after old events are pruned.
    __table_args__ = ({"sqlite_autoincrement": True},)
    # An integer sequence: events of one ordering key are delivered in this order.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)  # the event id receivers dedupe on
    type: Mapped[str] = mapped_column(String(32))
    shop_id: Mapped[str | None] = mapped_column(String(32))  # None: no shop (platform only)
    ordering_key: Mapped[str] = mapped_column(String(64))
    # Set by a caller that may emit the same fact twice (a replayed stream entry): one event.
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class Webhook(Base):
    """A subscription: a shop's (``shop_id`` = the streamer) or platform-wide (``shop_id`` None)."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(32), index=True)
    shop_id: Mapped[str | None] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(128))
    # After a rotation the old secret still signs (as a second v1) until ``prev_until``.
    prev_secret: Mapped[str | None] = mapped_column(String(128))
    prev_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event to one webhook; retried until delivered or given up (``failed``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_at"),
        Index("ix_webhook_deliveries_key", "webhook_id", "ordering_key", "status", "seq"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # X-Live-Delivery
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(32), index=True)
    event_type: Mapped[str] = mapped_column(String(32))
    ordering_key: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)  # the event's outbox seq
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(96))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(300))
    replay_of: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    """The delivery log: one row per POST, with the response code or the error."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                                             index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    ms: Mapped[int] = mapped_column(Integer)


# --- governance (migration 0009) ------------------------------------------------------------
# Shop violations are a table of their own: the chat ``violations`` above count guard hits on
# any user's content (the penalty ladder), these are a moderator's (or the server's) finding
# against a shop, with points that decay, a deduction and an appeal.
# The ledger sweeper reads the orders changed since its last round.
Index("ix_orders_updated_at", Order.updated_at)


class ShopViolation(Base):
    __tablename__ = "shop_violations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)  # the shop (its streamer)
    kind: Mapped[str] = mapped_column(String(20))  # private_trading | counterfeit | misleading | after_sales | other
    points: Mapped[int] = mapped_column(Integer)
    deduction_cents: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(String(500), default="")
    by: Mapped[str] = mapped_column(String(32))  # a moderator's id, or "system"
    # The restriction the shop stood under right after this violation ("" if none): for notices.
    restriction: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(16))  # active | revoked ("expired" is derived from expires_at)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the server found it from (``guard:<chat violation id>``, ``dispute:<case id>``); unique,
    # so a finding is recorded once however many processes sweep. NULL for a moderator's.
    source: Mapped[str | None] = mapped_column(String(120), unique=True)


class ShopApplication(Base):
    __tablename__ = "shop_applications"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    shop_name: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64))
    license_image: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | approved | rejected
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ShopAccount(Base):
    """One row per shop, updated first in every ledger transaction: the row lock (PostgreSQL)
    or the write lock it takes (SQLite) serialises a shop's payouts and deductions."""

    __tablename__ = "shop_accounts"
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class LedgerEntry(Base):
    """One money movement of a shop, in cents (signed). ``bucket`` is ``deposit`` or ``balance``;
    ``(kind, source)`` is unique, so every entry is written once whatever retries or races."""

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("kind", "source", name="uq_ledger_source"),
                      Index("ix_ledger_shop_at", "user_id", "at"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # deposit | sale | refund | deduction | payout
    bucket: Mapped[str] = mapped_column(String(16))  # deposit | balance
    amount_cents: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(120))
    order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    violation_id: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Appeal(Base):
    __tablename__ = "appeals"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    violation_id: Mapped[str] = mapped_column(String(32), unique=True)  # one appeal per violation
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    text: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | upheld | overturned
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
