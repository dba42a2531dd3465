"""Short, time-sortable, unguessable ids (ms timestamp + 64 random bits, base32-ish hex)."""

from __future__ import annotations

import functools
import os
import time
import weakref
from datetime import UTC, datetime


class RandomHex:
    """Random hex digits from the OS's CSPRNG, fetched in bulk: one ``getrandom`` call per
    ~500 ids instead of one per id (the buy path makes an id per tap). Forgotten in a forked
    child (``os.register_at_fork``), so two processes never share a buffer — without asking
    the kernel for the pid on every id."""

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._buf = ""
        self._at = 0
        me = weakref.ref(self)

        def forget_in_child() -> None:
            r = me()
            if r is not None:
                r.forget()

        os.register_at_fork(after_in_child=forget_in_child)

    def forget(self) -> None:
        self._buf, self._at = "", 0

    def take(self, digits: int) -> str:
        end = self._at + digits
        if end > len(self._buf):
            self._buf = os.urandom(max(self._chunk, digits)).hex()
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
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    # A storm's orders are made within the same few seconds: format each second once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
