"""Per-Redis-core capacity of the project's own per-order scripts.

``python -m bench.capacity [--orders 50000] [--batches 1,16,64] [--aof] [--json FILE]``

Starts a private ``redis-server`` (one core: Redis runs every script on its main thread) and
drives it with ``redis-cli --pipe`` — a deep pipeline of pre-built EVALSHA calls, so Redis, not
the client, is the bottleneck — through the life of real orders on one card:

1. ``buy.lua`` with B taps per call (the serving process gathers the taps of one event-loop tick
   into one call), every tap a new user, request and order: the success path;
2. ``after_pay.lua`` on every order those buys made (a new transaction each: ``PAID``);
3. ``after_ship.lua`` then ``after_confirm.lua`` (the buyer confirms) on every paid order;
4. ``release.lua`` (the buyer cancels) on the orders of a second card;
5. the companion commands the after-sales service sends around each script (two ``SADD`` to the
   card registries before and after, ``ZRANGE`` + ``ZADD LT`` of the next-due index).

For each phase it reports the Redis process's CPU (``/proc/PID/stat``, user+system) per
operation — whence operations per second per Redis core, ``1e6 / cpu_us`` — beside the wall
throughput (the client shares the machine's cores) and ``INFO commandstats``' own
``usec_per_call`` (script time only, without reading and parsing the request). Each phase is
checked: every call must have answered without a Redis error and every order must have reached
the phase's status, else the run fails (exit 2). Memory per order is ``used_memory`` after the
buys minus before, divided by the orders.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.procs import cpu_seconds, free_port, machine
from live.core import keys
from live.core.scripts import source

PAY_BY_MS = 15 * 60 * 1000
AUTO_CONFIRM_MS = 7 * 24 * 3600 * 1000


def resp(*args: str | int) -> bytes:
    """One command in the Redis protocol (what ``redis-cli --pipe`` sends as is)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


class PrivateRedis:
    """A ``redis-server`` of our own on a free port; AOF (``everysec``) on request, as the
    embedded server runs in production."""

    def __init__(self, aof: bool) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not on PATH")
        self.dir = Path(tempfile.mkdtemp(prefix="live-capacity-"))
        self.port = free_port()
        self.popen = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir),
             "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.client.close()
        if self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def pipe(r: PrivateRedis, commands: Iterable[bytes], n_ops: int, name: str) -> dict[str, Any]:
    """Send ``commands`` with ``redis-cli --pipe``; Redis CPU and wall time per operation."""
    exe = shutil.which("redis-cli")
    if not exe:
        raise RuntimeError("redis-cli is not on PATH")
    path = r.dir / f"{name}.resp"
    n_calls = 0
    with path.open("wb") as f:
        for c in commands:
            f.write(c)
            n_calls += 1
    r.client.config_resetstat()
    cpu0, t0 = cpu_seconds(r.popen.pid), time.perf_counter()
    with path.open("rb") as f:
        out = subprocess.run([exe, "-p", str(r.port), "--pipe"], stdin=f, capture_output=True, text=True,
                             timeout=900, check=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(r.popen.pid) - cpu0
    path.unlink()
    m = re.search(r"errors: (\d+), replies: (\d+)", out.stdout)
    if out.returncode != 0 or not m or int(m.group(1)) or int(m.group(2)) != n_calls:
        raise RuntimeError(f"{name}: redis-cli --pipe said {out.stdout.strip()!r} {out.stderr.strip()!r}")
    stats = r.client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return {
        "ops": n_ops, "calls": n_calls, "wall_s": round(wall, 3), "redis_cpu_s": round(cpu, 3),
        "redis_cpu_us_per_op": round(cpu / n_ops * 1e6, 2),
        "ops_per_s_per_redis_core": round(n_ops / cpu) if cpu else None,
        "ops_per_s_wall": round(n_ops / wall),
        "evalsha_usec_per_call": evalsha.get("usec_per_call"),
    }


def order_ids(card: str, n: int) -> list[str]:
    """``<card>-<12 hex>``: the form the server makes (the card, and so the slot, is in the id)."""
    return [f"{card}-{i:012x}" for i in range(n)]


def statuses(r: PrivateRedis, card: str) -> dict[str, int]:
    """How many of the card's orders are in each status (Redis's compact order JSON, ``s``)."""
    counts: dict[str, int] = {}
    for _, raw in r.client.hscan_iter(keys.card_orders(card), count=5000):
        s = str(orjson.loads(raw)["s"])
        counts[s] = counts.get(s, 0) + 1
    return counts


def expect(r: PrivateRedis, card: str, status: str, n: int, phase: str) -> None:
    got = statuses(r, card)
    if got.get(status, 0) != n:
        raise RuntimeError(f"{phase}: expected {n} orders {status}, Redis holds {got}")


def put_card(r: PrivateRedis, card: str) -> None:
    """An on-sale card whose stock and per-user limit the run cannot exhaust: every buy succeeds."""
    r.client.hset(keys.card_state(card), mapping={
        "status": "on_sale", "stock": 10**9, "left": 10**9, "limit": 10**9, "price": 1990,
        "starts_ms": 0, "ends_ms": 0, "room": "bench", "seq": 0})


def buy_calls(sha: str, card: str, oids: list[str], batch: int, now: int) -> Iterator[bytes]:
    k = [keys.card_state(card), keys.card_bought(card), keys.card_requests(card), keys.card_orders(card),
         keys.card_deadlines(card), keys.card_stream(card), keys.card_fans(card)]
    for start in range(0, len(oids), batch):
        taps: list[str | int] = []
        for i, oid in enumerate(oids[start:start + batch], start):
            taps += [f"u{i}", 1, f"r{i}", oid]
        yield resp("EVALSHA", sha, len(k), *k, now, now + PAY_BY_MS, 0, *taps)


def run(orders: int, batches: list[int], aof: bool) -> dict[str, Any]:
    r = PrivateRedis(aof)
    try:
        sha = {n: r.client.script_load(source(n)) for n in ("buy", "release")}
        lib = source("after_lib")
        sha |= {n: r.client.script_load(lib + "\n" + source(n)) for n in ("after_pay", "after_ship", "after_confirm")}
        now = int(time.time() * 1000)
        out: dict[str, Any] = {"orders": orders, "aof": "everysec" if aof else "off", "phases": {},
                               "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
        phases = out["phases"]

        # 1. buys, one card per batch size (the last one's orders go on through after-sales)
        for b in batches:
            card = f"cap-b{b}"
            put_card(r, card)
            mem0 = int(r.client.info("memory")["used_memory"])
            oids = order_ids(card, orders)
            phases[f"buy_batch_{b}"] = pipe(r, buy_calls(sha["buy"], card, oids, b, now), orders, f"buy{b}")
            phases[f"buy_batch_{b}"]["redis_bytes_per_order"] = round(
                (int(r.client.info("memory")["used_memory"]) - mem0) / orders)
            expect(r, card, "pending_payment", orders, f"buy batch {b}")
        # 1b. the refusal a sold-out card's taps meet in Redis (when no process knew it yet)
        so = "cap-soldout"
        put_card(r, so)
        r.client.hset(keys.card_state(so), mapping={"left": 0, "status": "sold_out"})
        phases[f"buy_sold_out_batch_{batches[-1]}"] = pipe(
            r, buy_calls(sha["buy"], so, order_ids(so, orders), batches[-1], now), orders, "soldout")
        if r.client.hlen(keys.card_orders(so)):
            raise RuntimeError("a sold-out card sold")
        card = f"cap-b{batches[-1]}"
        oids = order_ids(card, orders)
        ck = pay_keys(card)

        # 2–3. pay, ship, confirm every order of that card
        phases["after_pay"] = pipe(r, (resp("EVALSHA", sha["after_pay"], len(ck), *ck, o, "", f"t{i}", "", now, "0")
                                       for i, o in enumerate(oids)), orders, "pay")
        expect(r, card, "paid", orders, "after_pay")
        sk = [keys.card_orders(card), keys.card_cases(card), keys.card_after_due(card), keys.card_after_stream(card)]
        phases["after_ship"] = pipe(r, (resp("EVALSHA", sha["after_ship"], 4, *sk, o, "SF", f"SF{i:010d}", now,
                                             AUTO_CONFIRM_MS) for i, o in enumerate(oids)), orders, "ship")
        expect(r, card, "shipped", orders, "after_ship")
        phases["after_confirm"] = pipe(r, (resp("EVALSHA", sha["after_confirm"], 4, *sk, o, f"u{i}", now,
                                                AUTO_CONFIRM_MS) for i, o in enumerate(oids)), orders, "confirm")
        expect(r, card, "completed", orders, "after_confirm")

        # 4. cancel (release.lua) the orders of a second card
        rc = "cap-release"
        put_card(r, rc)
        roids = order_ids(rc, orders)
        pipe(r, buy_calls(sha["buy"], rc, roids, batches[-1], now), orders, "buy-for-release")
        rk = [keys.card_state(rc), keys.card_bought(rc), keys.card_orders(rc), keys.card_deadlines(rc),
              keys.card_stream(rc)]
        phases["release_cancel"] = pipe(r, (resp("EVALSHA", sha["release"], 5, *rk, o, "cancelled", now, f"u{i}")
                                            for i, o in enumerate(roids)), orders, "release")
        expect(r, rc, "cancelled", orders, "release")

        # 5. what the after-sales service sends around each script (live/commerce/postsale.py: run)
        def companions() -> Iterator[bytes]:
            due = keys.card_after_due(card)
            for _ in range(orders):
                for _ in range(2):
                    yield resp("SADD", keys.AFTER_CARDS, card)
                    yield resp("SADD", keys.AFTER_DIRTY, card)
                yield resp("ZRANGE", due, 0, 0, "WITHSCORES")
                yield resp("ZADD", keys.AFTER_NEXT, "LT", now, card)
        phases["after_sales_companions"] = pipe(r, companions(), orders, "companions")
        out["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
        out["redis"] = r.client.info("server")["redis_version"]
        return out
    finally:
        r.close()


def pay_keys(card: str) -> list[str]:
    """The payment service's keys (live/commerce/payments.py, PAY_KEYS) of one card."""
    return [keys.card_state(card), keys.card_bought(card), keys.card_orders(card), keys.card_deadlines(card),
            keys.card_txns(card), keys.card_after_stream(card)]


def table(out: dict[str, Any], emit: Callable[[str], None] = print) -> None:
    emit(f"{out['orders']:,} orders per phase, AOF {out['aof']}, load average before "
         f"{' '.join(out['loadavg_before'])}, after {' '.join(out['loadavg_after'])}")
    emit("| phase | calls | Redis CPU µs/op | ops/s per Redis core | ops/s wall | evalsha µs/call (INFO) |")
    emit("|---|---|---|---|---|---|")
    for name, p in out["phases"].items():
        per_core = p["ops_per_s_per_redis_core"]  # None: too few ops for one CPU tick (10 ms)
        core = "–" if per_core is None else f"{per_core:,}"
        emit(f"| {name} | {p['calls']:,} | {p['redis_cpu_us_per_op']} | {core} | "
             f"{p['ops_per_s_wall']:,} | {p['evalsha_usec_per_call'] or '–'} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--orders", type=int, default=50_000, help="orders per phase")
    p.add_argument("--batches", default="1,16,64", help="taps per buy.lua call, comma-separated")
    p.add_argument("--aof", action="store_true", help="appendonly yes, appendfsync everysec")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    try:
        out = run(args.orders, [int(b) for b in args.batches.split(",")], args.aof)
    except RuntimeError as e:
        print(f"capacity run failed: {e}", file=sys.stderr)
        return 2
    out["machine"] = machine()
    out["cpu_count_online"] = os.cpu_count()
    table(out)
    if args.json:
        with contextlib.suppress(FileNotFoundError):
            args.json.unlink()
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
