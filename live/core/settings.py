"""Settings: the defaults of the ``Settings`` model → optional ``--config`` file → ``LIVE_*``
environment. Later sources win.

One source of defaults: the model below. ``config/default.toml`` (installed as ``live.config``)
documents every setting with the same values and is not read at start-up; a test keeps the two in
agreement, and the file is a ready-made ``--config`` to copy. Values are validated by the typed
model, and a bad value stops start-up with a message that names the setting.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "LIVE_"


class SettingsError(Exception):
    """A setting has a bad value; the message names it."""


class Settings(BaseModel):
    """Every setting of the server and its default. ``config/default.toml`` says what each means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("./var")
    redis_url: str = ""
    redis_cluster: bool = False
    redis_max_connections: int = Field(256, ge=4)
    redis_pool_timeout_s: float = Field(5.0, gt=0)
    redis_appendfsync: Literal["everysec", "always"] = "everysec"
    database_url: str = ""
    socketio_redis_manager: Literal["auto", "on", "off"] = "auto"
    # false: a serving process runs no background loop (persisters, sweepers, ...): a `live worker`
    # does (docs/operations.md, "Process roles").
    background_loops: bool = True
    socket_ping_interval_s: float = Field(20.0, gt=0)
    socket_ping_timeout_s: float = Field(20.0, gt=0)

    secret: str = ""
    admin_token: str = ""
    token_ttl_s: int = Field(604800, ge=60)
    cors_origins: str = ""

    heartbeat_interval_s: float = Field(5.0, gt=0)
    heartbeat_dead_after_s: float = Field(15.0, gt=0)
    viewers_push_interval_s: float = Field(1.0, gt=0)

    default_limit_per_user: int = Field(1, ge=1)
    max_qty_per_buy: int = Field(10, ge=1)
    max_stock: int = Field(1_000_000, ge=1)
    max_price: Decimal = Decimal("1000000.00")
    payment_timeout_s: float = Field(900, gt=0)
    sweeper_interval_s: float = Field(1.0, gt=0)
    stock_push_interval_s: float = Field(0.25, gt=0)
    buy_rate_per_s: float = Field(20.0, gt=0)
    buy_rate_burst: int = Field(20, ge=1)
    persister_batch: int = Field(500, ge=1)
    persister_gather_ms: int = Field(100, ge=0, le=5000)
    persister_claim_idle_ms: int = Field(30000, ge=100)
    persister_max_deliveries: int = Field(5, ge=1)
    reconcile_interval_s: float = Field(60.0, gt=0)

    # --- stock fencing & order durability (docs/operations.md) ---
    fence_check_interval_s: float = Field(1.0, gt=0)
    fence_stale_s: float = Field(30.0, gt=0)
    fence_wait_s: float = Field(3.0, ge=0)
    order_durability: Literal["fast", "replica", "disk"] = "fast"
    order_durability_replicas: int = Field(1, ge=1)
    order_durability_timeout_ms: int = Field(500, ge=1)

    max_upload_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=10_000)
    image_display_px: int = Field(1080, ge=64)
    image_thumb_px: int = Field(320, ge=32)

    chat_max_len: int = Field(200, ge=1)
    chat_history: int = Field(50, ge=0)
    chat_rate_per_s: float = Field(1.0, gt=0)
    chat_rate_burst: int = Field(5, ge=1)
    banned_words: list[str] = Field(default_factory=list)
    penalties: list[str] = Field(default_factory=lambda: ["warn", "mute:300", "mute:3600", "chat_ban",
                                                               "listing_ban"])

    whep_max_viewers: int = Field(20, ge=0)
    hls_enabled: bool = True
    hls_segment_s: float = Field(1.0, gt=0)
    hls_playlist_size: int = Field(6, ge=2)
    ice_servers: list[str] = Field(default_factory=list)

    # --- rooms ending by themselves ---
    # A live room whose publisher (WHIP) and streamer (studio socket) have been gone this long ends.
    room_idle_end_s: float = Field(180.0, gt=0)
    # --- fans ---
    notifications_keep: int = Field(50, ge=1, le=1000)
    lucky_max_winners: int = Field(100, ge=1)
    lucky_min_duration_s: float = Field(1.0, gt=0)
    lucky_max_duration_s: float = Field(86400.0, gt=0)
    # --- after-sales (fulfilment, refunds, disputes) ---
    # Deadlines in seconds (any positive number, so tests can run them in seconds).
    auto_confirm_s: float = Field(7 * 86400, gt=0)
    after_sales_window_s: float = Field(15 * 86400, gt=0)
    after_sales_reply_s: float = Field(2 * 86400, gt=0)
    return_ship_s: float = Field(7 * 86400, gt=0)
    return_receive_s: float = Field(10 * 86400, gt=0)
    # Key of the payment provider's callback signature; empty: derived from the token secret.
    payment_secret: str = ""

    # --- integrations: webhooks (live.integrations) ---
    webhook_allow_private: bool = False
    webhook_retry_s: float = Field(5.0, gt=0)
    webhook_retry_max_s: float = Field(3600.0, gt=0)
    webhook_max_attempts: int = Field(12, ge=1)
    webhook_max_age_s: float = Field(3 * 86400.0, gt=0)
    webhook_retention_s: float = Field(30 * 86400.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_concurrency: int = Field(4, ge=1, le=64)
    webhook_max_inflight: int = Field(256, ge=1)
    webhook_poll_s: float = Field(0.5, gt=0)
    webhook_rotation_grace_s: float = Field(86400.0, ge=0)
    # --- governance (admission, violation points, shop ledger) ---
    # "open": any streamer lists; "review": a streamer's shop application must be approved first.
    shop_admission: Literal["open", "review"] = "open"
    # Points and deposit deduction (cents) a violation of each kind earns unless the moderator
    # says otherwise; points stop counting ``violation_decay_s`` after the violation.
    violation_points: dict[str, int] = Field(default_factory=lambda: {
        "private_trading": 12, "counterfeit": 24, "misleading": 6, "after_sales": 6, "other": 3})
    violation_deduction_cents: dict[str, int] = Field(default_factory=lambda: {
        "private_trading": 50000, "counterfeit": 100000, "misleading": 0, "after_sales": 0, "other": 0})
    violation_decay_s: float = Field(365 * 86400, gt=0)
    # Active points -> the restriction that tier adds (each tier keeps the lower tiers' ones).
    shop_tiers: dict[int, str] = Field(default_factory=lambda: {
        12: "no_scheduled_sales", 24: "no_listing", 36: "no_live", 48: "shop_closed"})
    # How often each process turns paid and refunded orders into ledger entries.
    ledger_sweep_s: float = Field(2.0, gt=0)
    # TEST ONLY: comma-separated faults the server injects once per process so that a verdict can
    # be shown to fail (live.core.faults). Refused unless LIVE_TEST_FAULTS=1 is in the environment.
    fault_injection: str = ""

    log_level: str = "INFO"
    # "uvloop" (libuv's event loop: cheaper socket I/O, tasks and timers on the buy path) or
    # "asyncio" (the standard library's).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Python's cyclic garbage collector (live.app.heap): once a process has started, what it built
    # (modules, models, pools) is frozen out of collection and the youngest generation is
    # collected every ``gc_young_threshold`` new objects instead of Python's 700. 0: Python's
    # defaults, nothing frozen.
    gc_young_threshold: int = Field(20_000, ge=0)

    # --- bounds and edge limits (docs in config/default.toml) ---
    socket_send_budget_bytes: int = Field(1024 * 1024, ge=4096)
    socket_send_budget_messages: int = Field(2000, ge=10)
    socket_max_per_user: int = Field(16, ge=1)
    socket_max_unauthenticated: int = Field(2000, ge=1)
    socket_handshake_timeout_s: float = Field(10.0, gt=0)
    socket_inflight_per_connection: int = Field(16, ge=1, le=256)
    http_body_timeout_s: float = Field(30.0, gt=0)
    guest_rate_per_s: float = Field(0.5, gt=0)
    guest_rate_burst: int = Field(20, ge=1)
    login_rate_per_s: float = Field(0.5, gt=0)
    login_rate_burst: int = Field(10, ge=1)
    password_hash_workers: int = Field(2, ge=1)
    password_hash_queue: int = Field(16, ge=0)
    role_cache_s: float = Field(2.0, ge=0)

    # Set by `live-server --workers N`, not by files: how many worker processes share this port.
    workers: int = Field(1, ge=1)

    # --- guard (private trading, docs/guard.md) ---
    guard_window_messages: int = Field(3, ge=0, le=20)  # a user's last N messages read with the next one
    guard_window_s: int = Field(60, ge=1, le=3600)  # ... if sent within this many seconds
    guard_model: bool = True  # the n-gram model as one more chat signal (docs/guard.md, "The learned signal")
    guard_hold_expiry_s: float = Field(4 * 3600.0, gt=0)  # a held message no moderator decided is dropped
    guard_hold_sweep_s: float = Field(30.0, gt=0)  # how often held messages are checked for expiry
    ocr_enabled: bool = True  # read the text in product photos and run the guard on it
    ocr_max_side_px: int = Field(1280, ge=128, le=4096)  # photos are scaled down to this before OCR
    ocr_frame_interval_s: float = Field(0.0, ge=0)  # read a frame of each live room this often; 0 = off
    ocr_cpu_budget: float = Field(0.25, gt=0, le=1)  # at most this share of one core on video frames

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("fault_injection")
    @classmethod
    def _faults(cls, v: str) -> str:
        from live.core.faults import parse_faults

        names = parse_faults(v)  # unknown names raise ValueError
        if names and os.environ.get("LIVE_TEST_FAULTS") != "1":
            raise ValueError("test-only: set LIVE_TEST_FAULTS=1 in the environment to inject faults")
        return ",".join(sorted(names))

    @field_validator("penalties")
    @classmethod
    def _penalties(cls, v: list[str]) -> list[str]:
        for p in v:
            kind, _, arg = p.partition(":")
            if kind not in {"warn", "mute", "chat_ban", "listing_ban"}:
                raise ValueError(f"unknown penalty {p!r}")
            if kind == "mute" and not arg.isdigit():
                raise ValueError(f"mute needs seconds, e.g. mute:300 (got {p!r})")
        return v

    @property
    def embedded_redis(self) -> bool:
        """True when the server starts and owns its own redis-server."""
        return not self.redis_url

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'live.db').resolve()}"

    @property
    def use_redis_manager(self) -> bool:
        """Whether Socket.IO fan-out goes through Redis pub/sub (needed across processes)."""
        if self.socketio_redis_manager == "auto":
            # A serving process without background loops hears the pushes of a `live worker`.
            return bool(self.redis_url) or self.workers > 1 or not self.background_loops
        return self.socketio_redis_manager == "on"

    def __repr__(self) -> str:  # secrets never reach a log line
        shown = self.model_dump()
        for k in ("secret", "admin_token", "payment_secret"):
            if shown.get(k):
                shown[k] = "***"
        for k in ("redis_url", "database_url"):
            shown[k] = _hide_password(shown[k])
        return f"Settings({shown})"

    __str__ = __repr__


def documented_defaults() -> str:
    """``config/default.toml``: every setting, its default and what it means."""
    return resources.files("live.config").joinpath("default.toml").read_text(encoding="utf-8")


def _hide_password(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _coerce_env(name: str, raw: str, annotation: Any) -> Any:
    """Environment values are strings; lists are given as JSON or comma-separated."""
    origin = getattr(annotation, "__origin__", None)
    if origin is list:
        raw = raw.strip()
        if raw.startswith("["):
            return orjson.loads(raw)
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Merge the sources over the model's defaults (plus explicit overrides, e.g. from the
    command line)."""
    env = dict(os.environ) if env is None else env
    merged: dict[str, Any] = {}
    for f in [Path(config_file)] if config_file else []:
        try:
            merged.update(tomllib.loads(Path(f).read_text(encoding="utf-8")))
        except FileNotFoundError as e:
            raise SettingsError(f"config file {f} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"config file {f} is not valid TOML: {e}") from e
    for name, field in Settings.model_fields.items():
        key = ENV_PREFIX + name.upper()
        if key in env:
            try:
                merged[name] = _coerce_env(name, env[key], field.annotation)
            except orjson.JSONDecodeError as e:
                raise SettingsError(f"{key}: not valid JSON ({e})") from e
    merged.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(merged) - set(Settings.model_fields)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])} (LIVE_{str(err['loc'][0]).upper()}): {err['msg']}"
            for err in e.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from e
