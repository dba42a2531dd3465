"""The issue's buy workload: C clients, each with K taps in flight, N cards on air, every tap a
new order (stock and per-user limit cover every tap, so no tap takes the cheap refusal).

Each client is one Socket.IO connection (a guest that joined the room) running K tap loops;
a loop sends ``flash:buy`` and waits for its ack, so K taps of a client are always in flight.
Taps go round-robin over the N cards. The load comes from ``procs`` spawned processes (the
generator must not be the bottleneck); they connect and join, then all start on one signal.

Measured: acks/s over the run (first tap to last ack), ack latency p50/p99, the server's CPU
between "all joined" and "all acks in" per ack, and the load generator's own CPU per ack.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.procs import Proc, cpu_seconds
from live.loadtest.api import Backend
from live.loadtest.client import ConnectRefused, Disconnected, LeanSocket, make_session


@dataclass(frozen=True)
class Plan:
    """What one load process does (picklable: it crosses a spawn)."""

    url: str
    room_id: str
    tokens: list[str]
    cards: list[str]
    inflight: int
    taps: int  # per client
    timeout: float


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, math.ceil(q * len(xs)) - 1)] * 1000, 2)


async def _client_async(plan: Plan, ready: Any, go: Any) -> dict[str, Any]:
    session = make_session()
    socks = [LeanSocket(session, plan.url) for _ in plan.tokens]
    errors: Counter[str] = Counter()
    lat: list[float] = []
    try:
        for sock, token in zip(socks, plan.tokens, strict=True):
            await sock.connect({"token": token}, timeout=plan.timeout)
            ack = await sock.call("room:join", {"room_id": plan.room_id}, timeout=plan.timeout)
            if not (isinstance(ack, dict) and ack.get("ok")):
                raise RuntimeError(f"room:join refused: {ack!r}")
        ready.set()
        await asyncio.to_thread(go.wait)  # a process-shared event: waited for in a thread
        pid = os.getpid()
        cpu0 = cpu_seconds(pid)
        t_start = time.monotonic()

        async def loop(ci: int, sock: LeanSocket, li: int) -> None:
            n_cards = len(plan.cards)
            for k in range(li, plan.taps, plan.inflight):
                card = plan.cards[(ci + k) % n_cards]
                t0 = time.monotonic()
                try:
                    ack = await sock.call("flash:buy", {"card_id": card, "qty": 1, "request_id": f"r{ci}-{k}"},
                                          timeout=plan.timeout)
                except (TimeoutError, Disconnected) as e:
                    errors[type(e).__name__] += 1
                    continue
                if isinstance(ack, dict) and ack.get("ok"):
                    lat.append(time.monotonic() - t0)
                else:
                    err = ack.get("error") if isinstance(ack, dict) else None
                    errors[str(err.get("code")) if isinstance(err, dict) else "BAD_ACK"] += 1

        await asyncio.gather(*(loop(ci, s, li) for ci, s in enumerate(socks) for li in range(plan.inflight)))
        t_end = time.monotonic()
        return {"lat": lat, "errors": dict(errors), "t_start": t_start, "t_end": t_end,
                "cpu_s": cpu_seconds(pid) - cpu0}
    finally:
        await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
        await session.close()


def client_main(plan: Plan, ready: Any, go: Any, out: Any) -> None:
    """A load process: uvloop when it is there, like the server."""
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        run = asyncio.run
    try:
        out.put(("ok", run(_client_async(plan, ready, go))))
    except (ConnectRefused, Disconnected, OSError, RuntimeError, TimeoutError) as e:
        out.put(("error", f"{type(e).__name__}: {e}"))
    except BaseException:  # anything else: say what, never leave the bench waiting for a result
        import traceback

        out.put(("error", traceback.format_exc(limit=8)))
        raise


async def buys_inflight(proc: Proc, clients: int = 100, inflight: int = 4, cards: int = 8, taps: int = 200,
                        procs: int = 2, timeout: float = 30.0, pause_worker: bool = False) -> dict[str, Any]:
    """Run the workload against ``proc`` and return its figures (see the module docstring)."""
    per_card = math.ceil(taps / cards)  # the most taps one client makes on one card
    session = make_session()
    try:
        backend = Backend(proc.url, session)
        room_id = await backend.setup_room("in-flight buy bench")
        card_ids = [str((await backend.create_card(clients * per_card, per_card)).card["id"])
                    for _ in range(cards)]
        sem = asyncio.Semaphore(50)

        async def guest(i: int) -> str:
            async with sem:
                return await backend.guest(f"buyer{i}")

        tokens = list(await asyncio.gather(*(guest(i) for i in range(clients))))
    finally:
        await session.close()

    ctx = mp.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    readies = []
    workers = []
    for p in range(procs):
        ready = ctx.Event()
        plan = Plan(proc.url, room_id, tokens[p::procs], card_ids, inflight, taps, timeout)
        w = ctx.Process(target=client_main, args=(plan, ready, go, out), daemon=True)
        w.start()
        readies.append(ready)
        workers.append(w)
    try:
        deadline = time.monotonic() + 120
        while not all(r.is_set() for r in readies):
            if any(w.exitcode not in (None, 0) for w in workers) or time.monotonic() > deadline:
                raise RuntimeError("a load process failed to connect")
            if not out.empty():
                kind, payload = out.get()
                raise RuntimeError(f"load process: {payload}")
            await asyncio.sleep(0.05)
        # Start when the server is idle: what setting up left behind (the cards' image checks
        # run in a thread) must not run during the buys nor be counted against them.
        settled = await until_idle(proc.pid)
        if proc.worker is not None:
            await until_idle(proc.worker.pid, below=WORKER_IDLE)
        cpu0 = cpu_seconds(proc.pid)
        wcpu0 = cpu_seconds(proc.worker.pid) if proc.worker is not None else 0.0
        if proc.worker is not None and pause_worker:
            # The serving process alone: orders wait in the Redis stream (as with no worker
            # running) and the worker drains them once the buys are in, on its own CPU.
            os.kill(proc.worker.pid, signal.SIGSTOP)
        go.set()
        results = []
        for _ in workers:
            # Each client's taps take turns (at most ``timeout`` each); clients run side by side.
            kind, payload = await asyncio.to_thread(out.get, True, taps * timeout)
            if kind != "ok":
                raise RuntimeError(f"load process: {payload}")
            results.append(payload)
        cpu1 = cpu_seconds(proc.pid)
        worker_cpu = None
        if proc.worker is not None:
            if pause_worker:
                os.kill(proc.worker.pid, signal.SIGCONT)
            # The worker persists what the buys left in Redis: its CPU until it is idle again.
            await until_idle(proc.worker.pid, below=WORKER_IDLE, timeout_s=120)
            worker_cpu = cpu_seconds(proc.worker.pid) - wcpu0
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
    lat = [x for r in results for x in r["lat"]]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    acks = len(lat)
    span = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    client_cpu = sum(r["cpu_s"] for r in results)
    return {
        "server": proc.name, "workload": f"{clients} clients × {inflight} in flight, {cards} cards, "
                                         f"{taps} taps each", "clients": clients, "inflight": inflight,
        "cards": cards, "taps": taps, "acks": acks, "buys_per_s": round(acks / span, 1) if span > 0 else 0.0,
        "latency_ms": {"p50": _pct(lat, 0.50), "p99": _pct(lat, 0.99), "max": _pct(lat, 1.0)},
        "server_cpu_us_per_ack": round((cpu1 - cpu0) / acks * 1e6, 1) if acks else None,
        "client_cpu_us_per_ack": round(client_cpu / acks * 1e6, 1) if acks else None,
        "seconds": round(span, 3), "errors": dict(errors), "settled_s": settled,
        "worker_paused_during_buys": pause_worker and proc.worker is not None,
        "worker_cpu_us_per_order": round(worker_cpu / acks * 1e6, 1) if worker_cpu is not None and acks else None,
    }


# An idle worker still polls (sweepers, schedulers, stream reads: ~20 loops): 6-12 % of a core on
# this box. Below 20 % it has nothing left to drain.
WORKER_IDLE = 0.2


async def until_idle(pid: int, below: float = 0.05, window_s: float = 0.5, timeout_s: float = 60.0) -> float:
    """Wait until ``pid`` used less than ``below`` of a core over ``window_s``; the seconds
    waited (``timeout_s`` at most: a server never idle is measured anyway)."""
    t0 = time.monotonic()
    while True:
        c0 = cpu_seconds(pid)
        await asyncio.sleep(window_s)
        if cpu_seconds(pid) - c0 < below * window_s or time.monotonic() - t0 >= timeout_s:
            return round(time.monotonic() - t0, 2)
