"""Go-live fan-out: a streamer with F followers, N of them connected, goes live; how long until
the last connected follower has ``notify:live``, and how much server CPU it took.

``python -m bench.fans_bench [--followers 100000] [--online 10000] [--others 1000] [--json FILE]``

Starts a private redis-server and one project server (``run_server.py``, SQLite in a temp data
dir), seeds the follower rows straight into SQL (100,000 follows and their guest accounts in one
transaction; tokens are minted with the server's secret, and honoured because the accounts
exist), connects N followers and ``--others`` non-followers as lean Socket.IO clients
(``live.loadtest.client``, in ``--procs`` processes), then POSTs ``/live`` and timestamps every
``notify:live``. Server CPU is the process's user+system time between the POST and the last
arrival. Non-followers must receive nothing; offline followers cost nothing (they read ``/api/me/notifications`` later).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson

from bench.procs import Stack, cpu_seconds, machine
from live.loadtest.client import LeanSocket, make_session
from live.loadtest.worker import raise_fd_limit

SECRET = "fans-bench-secret-" + "b" * 24


def token(user_id: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user_id, "name": user_id, "role": "viewer", "iat": now, "exp": now + 3600},
                      SECRET, algorithm="HS256")


def seed_follows(db: Path, streamer: str, n: int, others: int) -> None:
    """``n`` followers of ``streamer`` and ``others`` users who do not follow, as guest accounts:
    a token is only honoured for a user that exists (the server checks the account's role)."""
    now = datetime.now(UTC).isoformat()
    users = [f"bf{i:07d}" for i in range(n)] + [f"bo{i:07d}" for i in range(others)]
    con = sqlite3.connect(db, timeout=60)
    with con:
        con.executemany("INSERT INTO users (id, name, role, created_at) VALUES (?, ?, 'viewer', ?)",
                        ((u, u, now) for u in users))
        con.executemany("INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?, ?, ?)",
                        ((f"bf{i:07d}", streamer, now) for i in range(n)))
        con.execute("INSERT INTO follow_counts (user_id, followers) VALUES (?, ?)", (streamer, n))
    con.close()


def pct(xs: list[float], p: float) -> float:
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 1) if xs else 0.0


def client_worker(url: str, ids: list[str], ready: Any, go: Any, go_close: Any, out: Any, timeout: float) -> None:
    """A load process: connect ``ids``, say how many are connected, then record the wall-clock
    arrival of ``notify:live`` per user until told to stop."""
    raise_fd_limit()
    asyncio.run(_client(url, ids, ready, go, go_close, out, timeout))


async def _client(url: str, ids: list[str], ready: Any, go: Any, go_close: Any, out: Any,
                  timeout: float) -> None:
    arrivals: dict[str, float] = {}
    waiting: set[str] = set()  # connected followers without their notify:live yet
    all_in = asyncio.Event()
    session = make_session()
    sem = asyncio.Semaphore(100)
    socks: dict[str, LeanSocket] = {}

    async def one(uid: str) -> None:
        def on_event(event: str, raw: str, start: int, t: float) -> None:
            if event == "notify:live":
                arrivals.setdefault(uid, time.time())
                waiting.discard(uid)
                if not waiting:
                    all_in.set()

        s = LeanSocket(session, url, on_event)
        async with sem:
            for _ in range(3):
                try:
                    await s.connect({"token": token(uid)}, timeout=30)
                    socks[uid] = s
                    return
                except Exception:
                    await asyncio.sleep(0.5)

    await asyncio.gather(*[one(u) for u in ids])
    ready.put(len(socks))
    await asyncio.to_thread(go.wait)
    connected = [u for u, s in socks.items() if s.connected]
    waiting.update(u for u in connected if u.startswith("bf") and u not in arrivals)
    if not waiting:
        all_in.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), timeout)
    await asyncio.sleep(0.5)  # strays to non-followers would show up now
    out.put({"connected": connected, "arrivals": arrivals})
    # Stay connected until the server's CPU has been read: 11,000 disconnects are not fan-out.
    await asyncio.to_thread(go_close.wait, 120)
    for s in socks.values():
        await s.close()
    await session.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    stack = Stack()
    ctx = mp.get_context("spawn")
    with stack.running():
        redis_url = stack.start_redis()
        db = stack.dir / "fans.db"
        # Pings every 60 s: on a shared 2-core machine a connect storm of 11,000 clients must
        # not be mistaken for dead ones before the measurement starts.
        proc = stack.start_project(redis_url, LIVE_SECRET=SECRET, LIVE_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
                                   LIVE_SOCKET_PING_INTERVAL_S="60", LIVE_SOCKET_PING_TIMEOUT_S="60",
                                   LIVE_LOG_LEVEL="INFO")
        async with aiohttp.ClientSession() as http:
            async with http.post(proc.url + "/api/auth/register", json={
                    "username": "benchstreamer", "password": "correct horse", "role": "streamer"}) as r:
                s = await r.json()
            auth = {"Authorization": f"Bearer {s['token']}"}
            async with http.post(proc.url + "/api/rooms", json={"title": "fan-out bench"}, headers=auth) as r:
                room = await r.json()
            t = time.monotonic()
            seed_follows(db, s["user"]["id"], args.followers, args.others)
            seed_s = time.monotonic() - t
            ids = [f"bf{i:07d}" for i in range(args.online)] + [f"bo{i:07d}" for i in range(args.others)]
            ready, out, go, go_close = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
            workers = [ctx.Process(target=client_worker, args=(proc.url, ids[i::args.procs], ready, go, go_close, out,
                                                              args.timeout), daemon=True)
                       for i in range(args.procs)]
            t = time.monotonic()
            for w in workers:
                w.start()
            connected = sum([await asyncio.to_thread(ready.get, True, 600) for _ in workers])
            connect_s = time.monotonic() - t
            await asyncio.sleep(2.0)  # let the connect storm's tail settle before measuring
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.time()
            go.set()
            async with http.post(proc.url + f"/api/rooms/{room['id']}/live", headers=auth) as r:
                assert r.status == 200, await r.text()
            post_ms = (time.time() - t0) * 1000
            results = [await asyncio.to_thread(out.get, True, args.timeout + 60) for _ in workers]
            cpu1 = cpu_seconds(proc.pid)
            go_close.set()
            for w in workers:
                w.join(30)
    server_log = [line for line in proc.log.read_text(errors="replace").splitlines() if "go-live fan-out" in line]
    live_followers = [u for res in results for u in res["connected"] if u.startswith("bf")]
    arrivals = {u: t for res in results for u, t in res["arrivals"].items()}
    got = sorted((arrivals[u] - t0) * 1000 for u in live_followers if u in arrivals)
    wrong = sum(1 for u in arrivals if u.startswith("bo"))
    return {
        "followers": args.followers, "online_followers": args.online, "online_others": args.others,
        "connected": connected, "followers_connected_at_live": len(live_followers), "notified": len(got),
        "non_followers_notified": wrong, "post_live_ms": round(post_ms, 1),
        "fanout_ms": {"p50": pct(got, 0.5), "p99": pct(got, 0.99), "last": round(got[-1], 1) if got else None},
        "server_cpu_s": round(cpu1 - cpu0, 3), "seed_s": round(seed_s, 1), "connect_s": round(connect_s, 1),
        "client_procs": args.procs, "server_says": server_log[-1:], "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fans_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--followers", type=int, default=100_000)
    p.add_argument("--online", type=int, default=10_000)
    p.add_argument("--others", type=int, default=1000, help="connected users who do not follow")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.online > args.followers:
        p.error("--online cannot exceed --followers")
    out = asyncio.run(run(args))
    text = orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text)
    # Nothing connected is nothing measured: a failure, not a fan-out of 0 ms.
    ok = (0 < out["notified"] == out["followers_connected_at_live"] and out["non_followers_notified"] == 0)
    if out["followers_connected_at_live"] < args.online:
        print(f"only {out['followers_connected_at_live']} of {args.online} followers connected", file=sys.stderr)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
