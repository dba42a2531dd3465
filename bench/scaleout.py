"""Scale-out on one machine: ``live-server --workers N`` for several N under the same buy load.

``python -m bench.scaleout [--workers single,1,2] [--viewers 1000] [--taps 10] [--procs 1]
[--database postgres|sqlite] [--json FILE]``

For each N: a private ``redis-server`` and a fresh database (PostgreSQL by default, a database
of its own on ``postgres@127.0.0.1:5432``: several processes writing one SQLite file is not how
one scales out), the project started as ``run_server.py --workers N`` (the supervisor and its
processes on one port; ``single``: one process without ``--workers``), then the buy load of
``python -m bench``: ``--viewers`` viewers × ``--taps`` taps on a card with stock for all, every
tap a new order (``live.loadtest flash``, ``--procs`` load-generator processes).

Reported per N: acks/s, p50/p99, the audit verdict; the server's CPU per ack (the supervisor and
every process under it, ``/proc``), also net of what the same span costs idle (measured for
``--idle-s`` before the load), Redis's CPU per ack, and the **load generator's own CPU** per
ack (``time.process_time`` of its processes while it ran, from its report) — all of them share
the machine's cores, so acks/s alone would credit the server with what the cores it could not
have did. Server CPU is also given per role (supervisor, serving processes, background worker),
told apart by their command lines. The load average is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.procs import ROOT, Proc, Stack, cpu_seconds, free_port, machine, wait_http
from live.loadtest import Hooks, LoadConfig, run
from live.loadtest.worker import raise_fd_limit

PG = "postgresql://postgres@127.0.0.1:5432"


def tree(pid: int) -> list[int]:
    """``pid`` and every process under it (``/proc/PID/task/TID/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def role(pid: int) -> str:
    """What a process of the server is, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    if "live.ops.cli" in argv and "worker" in argv:
        return "background worker"
    if "live.app.main" in argv and "--worker" in argv:
        return "serving process"
    return "supervisor or single process"


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of ``pid`` and every process under it, summed by role."""
    out: dict[str, float] = {}
    for p in tree(pid):
        try:
            cpu = cpu_seconds(p)
        except OSError:
            continue
        r = role(p)
        out[r] = out.get(r, 0.0) + cpu
    return out


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def start_server(stack: Stack, redis_url: str, workers: int, db_url: str) -> Proc:
    """``run_server.py --workers N`` as ``Stack.start_project`` starts one process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
    env.update({"LIVE_REDIS_URL": redis_url, "LIVE_DATA_DIR": str(stack.dir / f"data-{port}"),
                "LIVE_LOG_LEVEL": "WARNING", "LIVE_DATABASE_URL": db_url,
                "LIVE_GUEST_RATE_PER_S": "1000000", "LIVE_GUEST_RATE_BURST": "1000000"})
    log = stack.dir / f"project-{port}.log"
    cmd = [sys.executable, str(ROOT / "run_server.py"), "--port", str(port)]
    if workers:  # 0: one process that does everything (no supervisor)
        cmd += ["--workers", str(workers)]
    p = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    proc = Proc(f"project --workers {workers}" if workers else "project", p, f"http://127.0.0.1:{port}", log)
    stack.procs.append(proc)
    wait_http(proc.url, 120, p)
    return proc


async def one(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack()
    db = f"live_scaleout_bench_{workers}"
    admin = None
    if args.database == "postgres":
        admin = await asyncpg.connect(f"{PG}/postgres")
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {db}")
        db_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
    else:
        db_url = f"sqlite+aiosqlite:///{stack.dir / 'live.db'}"
    marks: dict[str, tuple[float, float, float]] = {}
    by_role: dict[str, dict[str, float]] = {}
    try:
        with stack.running():
            redis_url = stack.start_redis()
            redis_pid = stack.procs[0].pid
            srv = start_server(stack, redis_url, workers, db_url)
            await asyncio.sleep(2.0)  # every process up and heartbeating

            def mark(name: str) -> None:
                by_role[name] = tree_cpu(srv.pid)
                marks[name] = (sum(by_role[name].values()), cpu_seconds(redis_pid), time.monotonic())

            # What the processes' own loops (heartbeats, persister polls, sweepers) cost with
            # nothing to do: N processes poll N times; a slow run pays it for longer.
            mark("idle0")
            await asyncio.sleep(args.idle_s)
            mark("idle1")

            async def joined() -> None:
                await asyncio.sleep(0.5)
                mark("join")

            async def ran() -> None:
                mark("run")

            before = loadavg()
            cfg = LoadConfig(url=srv.url, scenario="flash", viewers=args.viewers, stock=args.viewers * args.taps,
                             taps=args.taps, limit=args.taps, procs=args.procs, progress=False, audit_timeout=120)
            report = await run(cfg, Hooks(after_join=joined, after_run=ran))
            mark("audit")
            processes = len(tree(srv.pid))
    finally:
        if admin is not None:
            await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            await admin.close()
    d = report.data
    acks = int(d["acks"]) or 1
    c = d["client"]
    client_run_s = (c.get("cpu_us_per_message") or 0) * (c.get("frames") or 0) / 1e6

    def per_ack(a: str, b: str, i: int) -> float:
        return round((marks[b][i] - marks[a][i]) / acks * 1e6, 1)

    idle_s = marks["idle1"][2] - marks["idle0"][2]
    idle = [(marks["idle1"][i] - marks["idle0"][i]) / idle_s for i in (0, 1)]  # CPU s per s

    def net_per_ack(a: str, b: str, i: int) -> float:
        """Per ack, less what the same span would have cost idle."""
        span = marks[b][2] - marks[a][2]
        return round((marks[b][i] - marks[a][i] - idle[i] * span) / acks * 1e6, 1)

    return {
        "workers": workers, "server_processes": processes, "database": args.database,
        "viewers": args.viewers, "taps": args.taps, "load_procs": args.procs,
        "acks": d["acks"], "buys_per_s": d["buys_per_s"], "latency_ms": d["latency_ms"], "verdict": d.get("verdict"),
        "sold": d["sold"], "errors": d["errors"],
        # What the verdict rests on (the server's audit), so a bad one can be told apart from a slow one.
        "audit": d.get("audit"), "lost_orders": d.get("lost_orders"), "oversold": d.get("oversold"),
        "duplicate_orders": d.get("duplicate_orders"), "over_limit_users": d.get("over_limit_users"),
        "server_cpu_us_per_ack": per_ack("join", "run", 0),
        "server_cpu_us_per_ack_incl_persist": per_ack("join", "audit", 0),
        "redis_cpu_us_per_ack": per_ack("join", "run", 1),
        "redis_cpu_us_per_ack_incl_persist": per_ack("join", "audit", 1),
        "server_idle_cpu_per_s": round(idle[0], 4), "redis_idle_cpu_per_s": round(idle[1], 4),
        "server_cpu_us_per_ack_net_of_idle": net_per_ack("join", "run", 0),
        "server_cpu_us_per_ack_incl_persist_net_of_idle": net_per_ack("join", "audit", 0),
        "run_s": round(marks["run"][2] - marks["join"][2], 2),
        # Per role, from all viewers joined until the audit is clean (orders persisted).
        "cpu_us_per_ack_by_role_incl_persist": {
            r: round((by_role["audit"].get(r, 0.0) - by_role["join"].get(r, 0.0)) / acks * 1e6, 1)
            for r in sorted(by_role["audit"])},
        "load_generator_cpu_us_per_ack": round(client_run_s / acks * 1e6, 1),
        "loadavg_before": before, "loadavg_after": loadavg(),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    runs = [await one(0 if n == "single" else int(n), args) for n in args.workers.split(",")]
    return {"runs": runs, "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--workers", default="single,1,2",
                   help="comma-separated: 'single' (one process, no --workers) or N for --workers N")
    p.add_argument("--viewers", type=int, default=1000)
    p.add_argument("--taps", type=int, default=10)
    p.add_argument("--procs", type=int, default=1, help="load-generator processes")
    p.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--idle-s", type=float, default=5.0, help="idle span measured before the load")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    out = asyncio.run(main_async(args))
    text = orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if all(r["verdict"] == "ok" for r in out["runs"]) else 2


if __name__ == "__main__":
    sys.exit(main())
