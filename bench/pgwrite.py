"""PostgreSQL write capacity of the project's durable writes, through its own persister code.

``python -m bench.pgwrite [--cards 4] [--orders 10000] [--pg postgresql://postgres@127.0.0.1:5432]
[--json FILE]``

1. Creates a database of its own (``live_capacity_bench``, dropped first), starts a private
   ``redis-server`` and a project server on both, and lists ``--cards`` flash cards over HTTP
   (``live.loadtest.api.Backend``: the path a streamer takes). The server is then stopped, so
   that nothing else persists.
2. In this process, ``open_services`` (the services a server builds) on the same Redis and
   database: ``--orders`` orders per card are taken with the real ``buy.lua``
   (``Inventory.buy_many``, 64 taps per call) and wait in the cards' streams.
3. Timed: the order persister (``OrderService.persister.drain_once``: batches of
   ``persister_batch`` events of one card, one transaction each — a core ``INSERT … ON CONFLICT
   DO NOTHING`` of the rows, their ``order.created`` webhook outbox rows, the card's seq) until
   every stream is drained. Reports orders per second (wall), this process's CPU per order and
   the PostgreSQL backends' CPU per order (``/proc/PID/stat`` of the backends serving this
   database, from ``pg_stat_activity``).
4. Every order is paid (``Payments.settle``, the provider's callback path: ``after_pay.lua``),
   then the after-sales persister (``PostSale.persister``) is timed the same way.

Checked: ``orders`` in SQL equals the orders taken, and all of them are ``paid`` after step 4;
otherwise exit 2. Other engineers' databases on the same server are not counted (only the
backends of this database), but they share its disks and cores: the load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from sqlalchemy import text

from bench.procs import CLK_TCK, Stack, machine
from live.core.ids import now_ms
from live.loadtest.api import Backend

DB = "live_capacity_bench"


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def proc_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (those that still exist)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


async def backends(admin: asyncpg.Connection) -> list[int]:
    return [int(r["pid"]) for r in await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", DB)]


async def setup_cards(url: str, n: int, stock: int) -> list[str]:
    async with aiohttp.ClientSession() as http:
        backend = Backend(url, http)
        await backend.setup_room("capacity: PostgreSQL writes")
        # Every tap is a new user: a limit of one unit each never refuses.
        return [str((await backend.create_card(stock=stock, limit=1)).card["id"]) for _ in range(n)]


async def timed_drain(drain: Any, admin: asyncpg.Connection, orders: int) -> dict[str, Any]:
    """Call ``drain()`` (one persister pass; returns events applied) until a pass finds nothing;
    wall time and CPU of this process and of the database's backends, per order."""
    pids = await backends(admin)
    pg0, me0, t0 = proc_cpu(pids), time.process_time(), time.perf_counter()
    done = 0
    while n := await drain():
        done += n
    wall, me = time.perf_counter() - t0, time.process_time() - me0
    pids = sorted(set(pids) | set(await backends(admin)))
    pg = proc_cpu(pids) - pg0
    return {"orders": orders, "events": done, "wall_s": round(wall, 3),
            "orders_per_s_wall": round(orders / wall) if wall else None,
            "python_cpu_us_per_order": round(me / orders * 1e6, 1),
            "pg_backend_cpu_us_per_order": round(pg / orders * 1e6, 1), "pg_backends": len(pids)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here: the app's modules are heavy and only this benchmark needs them.
    from live.app.factory import DOMAINS
    from live.app.services import open_services
    from live.core.settings import load_settings

    admin = await asyncpg.connect(f"{args.pg}/postgres")
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    db_url = f"{args.pg.replace('postgresql://', 'postgresql+asyncpg://')}/{DB}"
    out: dict[str, Any] = {"cards": args.cards, "orders_per_card": args.orders, "loadavg_before": loadavg()}
    stack = Stack()
    try:
        with stack.running():
            redis_url = stack.start_redis()
            server = stack.start_project(redis_url, LIVE_DATABASE_URL=db_url)
            cards = await setup_cards(server.url, args.cards, args.orders)
            stack.stop(server)
            settings = load_settings(env={"LIVE_DATABASE_URL": db_url,
                                          "LIVE_DATA_DIR": tempfile.mkdtemp(prefix="live-pgwrite-")})
            out["persister_batch"] = settings.persister_batch
            async with open_services(settings, DOMAINS, redis_url=redis_url, role="cli") as svc:
                inv = svc.flash.inventory
                now = now_ms()
                t = time.perf_counter()
                for c in cards:
                    for start in range(0, args.orders, 64):
                        taps = [(f"u{i}", 1, f"r{i}", f"{c}-{i:012x}")
                                for i in range(start, min(start + 64, args.orders))]
                        res = await inv.buy_many(c, taps, now, now + 900_000)
                        bad = [r.code for r in res if r.code != "OK"]
                        if bad:
                            raise RuntimeError(f"buy.lua refused: {bad[:3]}")
                out["buy_s"] = round(time.perf_counter() - t, 2)
                total = args.cards * args.orders
                orders = svc.orders
                out["orders_persister"] = await timed_drain(orders.persister.drain_once, admin, total)
                async with svc.db() as s:
                    in_sql = int((await s.execute(text("SELECT count(*) FROM orders"))).scalar_one())
                if in_sql != total:
                    raise RuntimeError(f"{in_sql} orders in SQL, {total} taken")
                pay = svc.aftersales.payments
                sem = asyncio.Semaphore(64)  # within the Redis pool, as a server's callbacks would be

                async def settle(order_id: str) -> None:
                    async with sem:
                        await pay.settle(order_id, "t-" + order_id, None, owner="", strict=False)

                t = time.perf_counter()
                await asyncio.gather(*[settle(f"{c}-{i:012x}") for c in cards for i in range(args.orders)])
                out["settle_s"] = round(time.perf_counter() - t, 2)
                post = svc.aftersales.post
                out["after_sales_persister"] = await timed_drain(post.persister.drain_once, admin, total)
                async with svc.db() as s:
                    paid = int((await s.execute(text("SELECT count(*) FROM orders WHERE status = 'paid'")))
                               .scalar_one())
                if paid != total:
                    raise RuntimeError(f"{paid} orders paid in SQL, {total} paid in Redis")
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        out["pg_version"] = await admin.fetchval("SHOW server_version")
        await admin.close()
    out["loadavg_after"] = loadavg()
    out["machine"] = machine()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pgwrite", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--cards", type=int, default=4)
    p.add_argument("--orders", type=int, default=10_000, help="orders per card")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server (no database)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    try:
        out = asyncio.run(run(args))
    except RuntimeError as e:
        print(f"pgwrite run failed: {e}", file=sys.stderr)
        return 2
    text_out = orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()
    print(text_out)
    if args.json:
        args.json.write_text(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
