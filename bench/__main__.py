"""``python -m bench``: the project beside the Node.js reference, same load, same Redis.

Starts a private redis-server, the project (``run_server.py`` with ``LIVE_REDIS_URL`` and a
temp ``LIVE_DATA_DIR``) and the Node peer on it, then measures and prints ratios:

* buy acks/s, server CPU µs per ack, p50/p99 (``live.loadtest flash``, every tap a new order);
* card fan-out to N connected viewers (p50, p99, last viewer) and server RSS per viewer;
* the ceiling: ``redis-benchmark`` of ``live/lua/buy.lua`` via EVALSHA.

Targets (one server process): buy acks/s ≥ 0.5× Node; fan-out to 5,000 viewers, last one
≤ 300 ms; ≤ 30 KB per idle connected viewer. Exit status 0 whether or not targets are met
(they are reported, not asserted); 2 when a run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench import ceiling
from bench.loadbench import buys, fanout
from bench.procs import Proc, Stack, machine
from live.loadtest.worker import raise_fd_limit

TARGET_BUY_RATIO = 0.5
TARGET_FANOUT_LAST_MS = 300.0
TARGET_KB_PER_VIEWER = 30.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--buy-viewers", type=int, default=1000)
    p.add_argument("--taps", type=int, default=10, help="taps per viewer in the buy benchmark")
    p.add_argument("--fanout", default="1000,5000,10000", help="comma-separated viewer counts ('' to skip)")
    p.add_argument("--procs", type=int, default=2, help="load-tester processes for fan-out runs ≥ 5,000")
    p.add_argument("--manager", default="auto", choices=["auto", "on", "off"],
                   help="LIVE_SOCKETIO_REDIS_MANAGER of the project (auto = on, since LIVE_REDIS_URL is set)")
    p.add_argument("--server-env", action="append", default=[], metavar="LIVE_X=VALUE",
                   help="extra setting for the project server (repeatable), e.g. LIVE_EVENT_LOOP=asyncio")
    p.add_argument("--skip-node", action="store_true")
    p.add_argument("--skip-ceiling", action="store_true")
    p.add_argument("--skip-buys", action="store_true")
    p.add_argument("--ceiling-requests", type=int, default=100_000)
    p.add_argument("--json", type=Path, default=Path("bench/results.json"))
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    return p.parse_args(argv)


def server_env(pairs: list[str]) -> dict[str, str]:
    """``["LIVE_X=1", …]`` → ``{"LIVE_X": "1"}``; only LIVE_ settings are accepted."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("LIVE_"):
            raise SystemExit(f"--server-env wants LIVE_NAME=VALUE, got {pair!r}")
        env[key] = value
    return env


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def markdown(res: dict[str, Any]) -> str:
    """The result tables in Markdown (what docs/benchmarks.md shows)."""
    m = res["machine"]
    lines = [f"Run {res['date']} on {m['nproc']} × {m['cpu']}, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
             f"Python {m['python']}, Node {m['node']}, {m['redis']}.", "", f"Command: `{res['command']}`", ""]
    if res.get("buys"):
        lines += ["### Buy path (every tap a new order)", "",
                  "| server | viewers × taps | acks | acks/s | p50 ms | p99 ms | server CPU µs/ack | "
                  "… incl. persist+audit | verdict | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
        for b in res["buys"]:
            lines.append(f"| {b['server']} | {b['viewers']} × {b['taps']} | {b['acks']} | {b['buys_per_s']:,.0f} | "
                         f"{b['latency_ms']['p50']} | {b['latency_ms']['p99']} | {b['server_cpu_us_per_ack']} | "
                         f"{b['server_cpu_us_per_ack_incl_persist']} | {b['verdict']} | {b['errors'] or '–'} |")
        if "buy_ratio" in res:
            lines += ["", f"Project / Node acks/s: **{res['buy_ratio']:.2f}×** (target ≥ {TARGET_BUY_RATIO}×); "
                          f"CPU per ack project / Node: {res.get('cpu_ratio', '–')}"]
        lines.append("")
    if res.get("fanout"):
        lines += ["### Card fan-out and memory per connected viewer", "",
                  "| viewers | server | connected | p50 ms | p99 ms | last viewer ms | create ms | RSS MB joined | "
                  "KB / viewer |", "|---|---|---|---|---|---|---|---|---|"]
        for f in res["fanout"]:
            fo = f["fanout_ms"]
            lines.append(f"| {f['viewers']:,} | {f['server']} | {f['connected']:,} | {fo['p50']} | {fo['p99']} | "
                         f"{fo['max']} | {f['card_create_ms']} | {f['rss_mb_joined']} | {f['kb_per_viewer']} |")
        lines.append("")
    if res.get("ceiling"):
        c = res["ceiling"]
        lines += ["### Ceiling: redis-benchmark, EVALSHA of the buy script", "",
                  f"{c['requests']:,} calls, {c['clients']} clients, every call a new user/request/order.", "",
                  "| script | buys/s unpipelined | buys/s pipeline 16 |", "|---|---|---|",
                  f"| live/lua/buy.lua | {c['buy_lua_p1']:,.0f} | {c['buy_lua_p16']:,.0f} |",
                  f"| Node peer flashBuy | {c['node_lua_p1']:,.0f} | {c['node_lua_p16']:,.0f} |", ""]
    if res.get("targets"):
        lines += ["### Targets", ""] + [f"- {t}" for t in res["targets"]] + [""]
    return "\n".join(lines)


def targets(res: dict[str, Any]) -> list[str]:
    out = []
    if "buy_ratio" in res:
        ok = res["buy_ratio"] >= TARGET_BUY_RATIO
        out.append(f"{'MET' if ok else 'MISSED'}: buy acks/s {res['buy_ratio']:.2f}× Node (≥ {TARGET_BUY_RATIO}×)")
    for f in res.get("fanout", []):
        if f["server"] != "project":
            continue
        if f["viewers"] == 5000:
            last = f["fanout_ms"]["max"]
            ok = last <= TARGET_FANOUT_LAST_MS and f["connected"] == 5000
            out.append(f"{'MET' if ok else 'MISSED'}: fan-out to 5,000, last viewer {last} ms "
                       f"(≤ {TARGET_FANOUT_LAST_MS:.0f} ms; {f['connected']} connected)")
        if f["kb_per_viewer"] is not None:
            ok = f["kb_per_viewer"] <= TARGET_KB_PER_VIEWER
            out.append(f"{'MET' if ok else 'MISSED'}: {f['kb_per_viewer']} KB per idle viewer at "
                       f"{f['viewers']:,} (≤ {TARGET_KB_PER_VIEWER:.0f} KB)")
    return out


async def main_async(a: argparse.Namespace, console: Console) -> dict[str, Any]:
    raise_fd_limit()
    res: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                           "command": "python -m bench " + " ".join(sys.argv[1:]), "manager": a.manager,
                           "server_env": server_env(a.server_env)}
    stack = Stack(manager=a.manager)
    with stack.running():
        redis_url = stack.start_redis()
        console.log(f"redis on {redis_url}")
        if not a.skip_ceiling:
            console.log("ceiling: redis-benchmark EVALSHA buy.lua …")
            res["ceiling"] = await asyncio.to_thread(ceiling.run, stack.redis_port, a.ceiling_requests)
            console.log(res["ceiling"])
        def start(name: str) -> Proc:
            srv = (stack.start_project(redis_url, **server_env(a.server_env)) if name == "project"
                   else stack.start_node(redis_url))
            console.log(f"{name} on {srv.url} (pid {srv.pid})")
            return srv

        servers = [start(name) for name in (["project"] if a.skip_node else ["project", "node"])]
        if not a.skip_buys:
            res["buys"] = []
            for srv in servers:
                console.log(f"buys: {srv.name}, {a.buy_viewers} viewers × {a.taps} taps …")
                b = await buys(srv, a.buy_viewers, a.taps, 1)
                console.log(b)
                res["buys"].append(b)
            by = {b["server"]: b for b in res["buys"]}
            if "node" in by and by["node"]["buys_per_s"]:
                res["buy_ratio"] = by["project"]["buys_per_s"] / by["node"]["buys_per_s"]
                res["cpu_ratio"] = _ratio(by["project"]["server_cpu_us_per_ack"], by["node"]["server_cpu_us_per_ack"])
        res["fanout"] = []
        for n in [int(x) for x in a.fanout.split(",") if x.strip()]:
            for i, srv in enumerate(servers):
                # A fresh process per size: memory freed by an earlier run would otherwise be reused
                # and flatter "KB per viewer" (seen: 14 KB at 10,000 after a 5,000 run, 34 fresh).
                stack.stop(srv)
                srv = servers[i] = start(srv.name)
                console.log(f"fan-out: {srv.name}, {n:,} viewers …")
                try:
                    f = await fanout(srv, n, a.procs if n >= 5000 else 1)
                except Exception as e:  # one size too big for the machine must not lose the others
                    console.log(f"[red]fan-out {srv.name} {n} failed: {type(e).__name__}: {e}")
                    res["fanout"].append({"server": srv.name, "viewers": n, "error": f"{type(e).__name__}: {e}"})
                    continue
                console.log(f)
                res["fanout"].append(f)
    res["fanout"] = [f for f in res["fanout"] if "error" not in f] + \
        [f for f in res["fanout"] if "error" in f]
    res["targets"] = targets({**res, "fanout": [f for f in res["fanout"] if "error" not in f]})
    return res


def show(res: dict[str, Any], console: Console) -> None:
    t = Table(title="live-commerce vs Node.js reference")
    for col in ("measure", "project", "node", "ratio"):
        t.add_column(col)
    by = {b["server"]: b for b in res.get("buys", [])}
    if by:
        p, n = by.get("project", {}), by.get("node", {})
        t.add_row("buy acks/s", f"{p.get('buys_per_s', 0):,.0f}", f"{n.get('buys_per_s', 0):,.0f}",
                  _ratio(p.get("buys_per_s"), n.get("buys_per_s")))
        t.add_row("server CPU µs/ack", str(p.get("server_cpu_us_per_ack")), str(n.get("server_cpu_us_per_ack")),
                  _ratio(p.get("server_cpu_us_per_ack"), n.get("server_cpu_us_per_ack")))
        for q in ("p50", "p99"):
            pv, nv = p.get("latency_ms", {}).get(q), n.get("latency_ms", {}).get(q)
            t.add_row(f"buy ack {q} ms", str(pv), str(nv), _ratio(pv, nv))
    fo: dict[int, dict[str, Any]] = {}
    for f in res.get("fanout", []):
        fo.setdefault(f["viewers"], {})[f["server"]] = f
    for n_viewers, row in sorted(fo.items()):
        p, n = row.get("project", {}), row.get("node", {})
        for q in ("p50", "p99", "max"):
            pv = p.get("fanout_ms", {}).get(q) if "fanout_ms" in p else p.get("error")
            nv = n.get("fanout_ms", {}).get(q) if "fanout_ms" in n else n.get("error")
            label = "last" if q == "max" else q
            t.add_row(f"fan-out {n_viewers:,} {label} ms", str(pv), str(nv),
                      _ratio(pv if isinstance(pv, float) else None, nv if isinstance(nv, float) else None))
        t.add_row(f"KB per viewer @ {n_viewers:,}", str(p.get("kb_per_viewer")), str(n.get("kb_per_viewer")),
                  _ratio(p.get("kb_per_viewer"), n.get("kb_per_viewer")))
    if res.get("ceiling"):
        c = res["ceiling"]
        t.add_row("ceiling EVALSHA buys/s (P1)", f"{c['buy_lua_p1']:,.0f}", f"{c['node_lua_p1']:,.0f}",
                  _ratio(c["buy_lua_p1"], c["node_lua_p1"]))
        t.add_row("ceiling EVALSHA buys/s (P16)", f"{c['buy_lua_p16']:,.0f}", f"{c['node_lua_p16']:,.0f}",
                  _ratio(c["buy_lua_p16"], c["node_lua_p16"]))
    console.print(t)
    for line in res.get("targets", []):
        console.print(("[green]" if line.startswith("MET") else "[red]") + line)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    console = Console()
    try:
        res = asyncio.run(main_async(a, console))
    except Exception as e:
        console.print_exception()
        print(f"bench failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    show(res, console)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    md = markdown(res)
    if a.markdown:
        a.markdown.write_text(md, encoding="utf-8")
    console.print(f"results: {a.json}" + (f", {a.markdown}" if a.markdown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
