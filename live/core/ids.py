"""Short, time-sortable, unguessable ids (ms timestamp + 64 random bits, base32-ish hex)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime


class RandomHex:
    """Random hex digits from the OS's CSPRNG, fetched in bulk: one ``getrandom`` call per
    ~500 ids instead of one per id (the buy path makes an id per tap). Refetched after a fork,
    so two processes never share a buffer."""

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._buf = ""
        self._at = 0
        self._pid = 0

    def take(self, digits: int) -> str:
        end = self._at + digits
        if end > len(self._buf) or self._pid != os.getpid():
            self._buf = os.urandom(max(self._chunk, digits)).hex()
            self._pid = os.getpid()
            self._at, end = 0, digits
        out = self._buf[self._at:end]
        self._at = end
        return out


RANDOM = RandomHex()


def new_id() -> str:
    """A 24-character id that sorts by creation time."""
    return f"{time.time_ns() // 1_000_000:012x}{RANDOM.take(12)}"


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


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as :func:`iso` writes them (``2026-11-25T15:04:05.123Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
