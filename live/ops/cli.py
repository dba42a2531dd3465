"""``live`` — operations commands.

    live migrate                   create the data dir if need be and apply database migrations
    live reconcile [--card ID]     check the stock invariant across Redis and SQL
    live rebuild CARD_ID           rebuild a card's Redis state from SQL (after Redis data loss)
    live admin-token               print the moderator token (LIVE_ADMIN_TOKEN or the generated one)
    live defaults                  print every setting with its default and meaning (a --config to copy)
    live worker [--host H] [--port P]
                                   run the background loops (persisters, sweepers, reconcile, webhooks, ...)
                                   beside serving processes started with --no-background; /healthz and
                                   /metrics on H:P (default 127.0.0.1, any free port); until Ctrl-C

Each reads the same settings as the server (``--config`` file, ``LIVE_*`` environment) and opens
the same services (``live.app.services.open_services``). With no ``LIVE_REDIS_URL`` it talks to
the embedded Redis of a server running on the same data dir.

Exit codes: 0 ok; 1 the check found a problem (reconcile mismatch, rebuild of an unknown card);
2 bad settings or a backend that cannot be reached (no Redis, no database).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import redis.exceptions
import sqlalchemy.exc

from live.core import db as dbmod
from live.core.settings import Settings, SettingsError, documented_defaults, load_settings
from live.ops.embedded import EmbeddedRedis

if TYPE_CHECKING:
    from live.app.services import Services

OK, PROBLEM, UNREACHABLE = 0, 1, 2

# "Cannot reach a backend": Redis or the database refused, timed out or is not there.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, ConnectionError, TimeoutError,
)


class Unreachable(Exception):
    """A backend the command needs is not there; the message says which and what to do."""


def redis_url_for(settings: Settings) -> str:
    """The configured Redis, else the embedded one of a server running on this data dir."""
    if settings.redis_url:
        return settings.redis_url
    emb = EmbeddedRedis(settings.data_dir)
    if not emb.socket.exists():
        raise Unreachable(f"no LIVE_REDIS_URL and no embedded Redis running in {settings.data_dir}: "
                          "start the server first (make run), or set LIVE_REDIS_URL")
    return emb.url


async def with_services(settings: Settings, work: Callable[[Services], Awaitable[int]]) -> int:
    # Imported here: the app's modules (aiortc, PyAV, ...) cost seconds that --help, migrate and
    # defaults do not need.
    from live.app.factory import DOMAINS
    from live.app.services import open_services

    async with open_services(settings, DOMAINS, redis_url=redis_url_for(settings), role="cli") as svc:
        return await work(svc)


async def _migrate(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # SQLite's file lives there
    engine = dbmod.make_engine(settings.resolved_database_url)
    try:
        await dbmod.migrate(engine)
    finally:
        await engine.dispose()
    print(f"database is at the newest schema ({settings.resolved_database_url.split('://', 1)[0]})")
    return OK


async def _reconcile(settings: Settings, card: str | None, as_json: bool) -> int:
    async def work(svc: Services) -> int:
        await svc.orders.flush(timeout=10)
        reports = [await svc.orders.reconcile(card)] if card else await svc.orders.reconcile_all()
        bad = [r for r in reports if not r["ok"]]
        if as_json:
            print(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode())
        else:
            for r in reports:
                mark = "ok " if r["ok"] else "BAD"
                print(f"{mark} card {r['card_id']}: stock {r.get('stock')} left {r.get('left')} "
                      f"sold {r.get('sold')} (sql {r['sql_orders']} orders, {r['pending_persist']} waiting)")
                for p in r["problems"]:
                    print(f"    - {p}")
            print(f"{len(reports)} card(s) checked, {len(bad)} with problems")
        return PROBLEM if bad else OK

    return await with_services(settings, work)


async def _rebuild(settings: Settings, card: str) -> int:
    async def work(svc: Services) -> int:
        ok = await svc.orders.rebuild(card, force=True)  # safe while servers sell: it fences the card
        if not ok:
            print(f"no card {card} in the database", file=sys.stderr)
            return PROBLEM
        report: dict[str, Any] = await svc.orders.reconcile(card)
        done = svc.orders.last_rebuild
        print(f"rebuilt card {card}: stock {report.get('stock')} left {report.get('left')} "
              f"(found left {done.get('left_before')} seq {done.get('seq_before')}, sql seq {done.get('sql_seq')}); "
              f"{'invariant holds' if report['ok'] else 'problems: ' + '; '.join(report['problems'])}")
        return OK if report["ok"] else PROBLEM

    return await with_services(settings, work)


async def _worker(settings: Settings, host: str, port: int) -> int:
    from live.app import heap
    from live.app.factory import DOMAINS
    from live.app.ready import notify_ready
    from live.app.worker import run_worker

    def ready(url: str) -> None:
        heap.settle(settings.gc_young_threshold)
        print(f"live worker is ready (health and metrics on {url})", flush=True)
        notify_ready()

    await run_worker(settings, DOMAINS, redis_url=redis_url_for(settings), host=host, port=port, ready=ready)
    return OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="live", description="live-commerce operations (exit 0 ok, 1 problem found, "
                                "2 bad settings or a backend that cannot be reached)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a TOML file of settings, keys as in `live defaults` (default: none; LIVE_* "
                   "environment variables apply either way)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="create the data dir if need be and apply database migrations")
    r = sub.add_parser("reconcile", help="check the stock invariant of every active card (or one); "
                       "exit 1 on a mismatch")
    r.add_argument("--card", default=None, help="only this card id (default: every active card)")
    r.add_argument("--json", action="store_true", help="print the reports as JSON")
    b = sub.add_parser("rebuild", help="rebuild a card's Redis state from SQL")
    b.add_argument("card", help="the card id")
    sub.add_parser("admin-token", help="print the moderator token (LIVE_ADMIN_TOKEN, or the one generated "
                   "in the data dir at first start)")
    w = sub.add_parser("worker", help="run the background loops (no clients): beside serving processes "
                       "started with --no-background (docs/operations.md, \"Process roles\")")
    w.add_argument("--host", default="127.0.0.1", help="address of /healthz and /metrics (default: 127.0.0.1)")
    w.add_argument("--port", type=int, default=0, help="port of /healthz and /metrics (default: 0, any free one)")
    sub.add_parser("defaults", help="print every setting with its default and meaning (config/default.toml, "
                   "a starting point for --config)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "defaults":
        print(documented_defaults(), end="")
        return OK
    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        print(f"live: {e}", file=sys.stderr)
        return UNREACHABLE
    try:
        if args.cmd == "migrate":
            return asyncio.run(_migrate(settings))
        if args.cmd == "reconcile":
            return asyncio.run(_reconcile(settings, args.card, args.json))
        if args.cmd == "worker":
            return _run_worker(settings, args.host, args.port)
        if args.cmd == "admin-token":
            from live.app.services import admin_token

            print(admin_token(settings))
            return OK
        return asyncio.run(_rebuild(settings, args.card))
    except Unreachable as e:
        print(f"live: {e}", file=sys.stderr)
        return UNREACHABLE
    except UNREACHABLE_ERRORS as e:
        print(f"live: cannot reach a backend: {type(e).__name__}: {e}", file=sys.stderr)
        return UNREACHABLE


def _run_worker(settings: Settings, host: str, port: int) -> int:
    """The worker on the server's event loop kind (uvloop by default)."""
    import logging

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if settings.event_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_worker(settings, host, port))


if __name__ == "__main__":
    sys.exit(main())
