"""Per-user token buckets in Redis (shared by every process)."""

from __future__ import annotations

from typing import Any

from live.core import keys
from live.core.errors import RateLimited
from live.core.ids import now_ms


class RateLimiter:
    def __init__(self, scripts: Any) -> None:
        self._bucket = scripts.bucket

    async def take(self, user_id: str, what: str, rate: float, burst: int) -> None:
        """Take a token from ``user_id``'s ``what`` bucket or raise ``RateLimited``."""
        ok = await self._bucket(keys=[keys.user_bucket(user_id, what)], args=[rate, burst, now_ms()])
        if not int(ok):
            raise RateLimited(f"too many {what} requests; slow down")
