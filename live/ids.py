"""Short, time-sortable, unguessable ids (ms timestamp + 64 random bits, base32-ish hex)."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime


def new_id() -> str:
    """A 24-character id that sorts by creation time."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, or None."""
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
