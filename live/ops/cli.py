"""``live`` — operations commands.

    live migrate                   apply database migrations
    live reconcile [--card ID]     check the stock invariant across Redis and SQL (exit 1 on mismatch)
    live rebuild CARD_ID           rebuild a card's Redis state from SQL (after Redis data loss)

Each reads the same settings as the server (``--config`` file, ``LIVE_*`` environment). With no
``LIVE_REDIS_URL`` it talks to the embedded Redis of a server running on the same data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson

from live.core import db as dbmod
from live.core.settings import Settings, SettingsError, load_settings


class NullPusher:
    """Commands have no clients to push to."""

    async def to_room(self, room_id: str, event: str, data: Any) -> None:
        return None

    async def to_user(self, user_id: str, event: str, data: Any) -> None:
        return None

    async def kick(self, room_id: str, user_id: str) -> None:
        return None


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Any]:
    """The domain services over the configured Redis and database, without a web server."""
    from live.app.factory import SCRIPTS
    from live.app.services import Services
    from live.commerce.flashbuy import SCRIPTS as FLASH_SCRIPTS
    from live.commerce.flashbuy import install
    from live.community.presence import Presence
    from live.community.rooms import RoomService
    from live.core.auth import AuthService
    from live.core.bus import Bus
    from live.core.metrics import Metrics
    from live.core.ratelimit import RateLimiter
    from live.core.redisconn import make_redis
    from live.core.scripts import Scripts
    from live.ops.embedded import EmbeddedRedis

    url = settings.redis_url
    if not url:
        emb = EmbeddedRedis(settings.data_dir)
        if not emb.socket.exists():
            raise SystemExit("no LIVE_REDIS_URL and no embedded Redis running in "
                             f"{settings.data_dir}: start the server first")
        url = emb.url
    redis = make_redis(url, settings, cluster=settings.redis_cluster)
    engine = dbmod.make_engine(settings.resolved_database_url)
    try:
        scripts = Scripts(redis, SCRIPTS + FLASH_SCRIPTS)
        db = dbmod.make_sessionmaker(engine)
        pusher = NullPusher()

        async def noop(room_id: str, n: int) -> None:
            return None

        presence = Presence(redis, scripts, "cli", heartbeat_s=5, dead_after_s=15, push_interval_s=1, on_count=noop)
        svc = Services(settings=settings, proc_id="cli", redis=redis, engine=engine, db=db, scripts=scripts,
                       metrics=Metrics(), bus=Bus(redis), pusher=pusher, ratelimit=RateLimiter(scripts),
                       auth=AuthService(db, "unused", 60), presence=presence,
                       rooms=RoomService(db, pusher, presence, redis))
        install(svc)
        yield svc
    finally:
        await redis.aclose()
        await engine.dispose()


async def _migrate(settings: Settings) -> int:
    engine = dbmod.make_engine(settings.resolved_database_url)
    try:
        await dbmod.migrate(engine)
    finally:
        await engine.dispose()
    print("database is at the newest schema")
    return 0


async def _reconcile(settings: Settings, card: str | None, as_json: bool) -> int:
    async with open_services(settings) as svc:
        await svc.orders.flush(timeout=10)
        reports = [await svc.orders.reconcile(card)] if card else await svc.orders.reconcile_all()
    bad = [r for r in reports if not r["ok"]]
    if as_json:
        print(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode())
    else:
        for r in reports:
            mark = "ok " if r["ok"] else "BAD"
            print(f"{mark} card {r['card_id']}: stock {r.get('stock')} left {r.get('left')} sold {r.get('sold')} "
                  f"(sql {r['sql_orders']} orders, {r['pending_persist']} waiting)")
            for p in r["problems"]:
                print(f"    - {p}")
        print(f"{len(reports)} card(s) checked, {len(bad)} with problems")
    return 1 if bad else 0


async def _rebuild(settings: Settings, card: str) -> int:
    async with open_services(settings) as svc:
        ok = await svc.orders.rebuild(card, force=True)  # safe while servers sell: it fences the card
        if not ok:
            print(f"no card {card} in the database", file=sys.stderr)
            return 1
        report = await svc.orders.reconcile(card)
        done = svc.orders.last_rebuild
    print(f"rebuilt card {card}: stock {report.get('stock')} left {report.get('left')} "
          f"(found left {done.get('left_before')} seq {done.get('seq_before')}, sql seq {done.get('sql_seq')}); "
          f"{'invariant holds' if report['ok'] else 'problems: ' + '; '.join(report['problems'])}")
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="live", description="live-commerce operations")
    p.add_argument("--config", default=None, help="a TOML file of settings")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    r = sub.add_parser("reconcile", help="check the stock invariant of every active card (or one)")
    r.add_argument("--card", default=None)
    r.add_argument("--json", action="store_true")
    b = sub.add_parser("rebuild", help="rebuild a card's Redis state from SQL")
    b.add_argument("card")
    args = p.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        print(f"live: {e}", file=sys.stderr)
        return 2
    if args.cmd == "migrate":
        return asyncio.run(_migrate(settings))
    if args.cmd == "reconcile":
        return asyncio.run(_reconcile(settings, args.card, args.json))
    return asyncio.run(_rebuild(settings, args.card))


if __name__ == "__main__":
    sys.exit(main())
