"""What the standing check costs the listing path: ``python -m bench.governance_bench``.

Starts a private redis-server and a fresh database (SQLite, or PostgreSQL with
``LIVE_TEST_DATABASE_URL``), one app, a shop with five violations, then times
``Governance.require`` with the per-process cache warm (one Redis GET of the shop's standing
version) and the SQL computation it falls back to when the version moved.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from tests.support import Api, RedisServer, TestDatabase, run_app, test_settings

CALLS = 5000


async def measure(redis_url: str, db_url: str) -> None:
    settings = test_settings(redis_url, db_url, Path(tempfile.mkdtemp()) / "data")
    async with run_app(settings) as srv, Api(srv.url) as api:
        shop = await api.streamer()
        uid = shop["user"]["id"]
        for _ in range(5):
            await api.ok("POST", "/api/moderation/violations", json={"user_id": uid, "kind": "other", "points": 1},
                         token=settings.admin_token)
        gov = srv.services.governance
        await gov.require(uid, "listing")
        t = time.perf_counter()
        for _ in range(CALLS):
            await gov.require(uid, "listing")
        warm = (time.perf_counter() - t) / CALLS
        t = time.perf_counter()
        for _ in range(CALLS // 10):
            await gov.standing.compute(uid)
        cold = (time.perf_counter() - t) / (CALLS // 10)
        print(f"require, cache warm (1 Redis GET): {warm * 1e6:.0f} µs; standing from SQL: {cold * 1e6:.0f} µs")


def main() -> None:
    redis, db = RedisServer(), TestDatabase()
    redis.start()
    db.create()
    try:
        asyncio.run(measure(redis.url, db.url()))
    finally:
        db.drop()
        redis.stop()


if __name__ == "__main__":
    main()
