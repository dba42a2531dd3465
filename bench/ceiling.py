"""The ceiling: ``redis-benchmark`` calling the buy script itself via EVALSHA on the same Redis.

No Python, no Node, no Socket.IO: how many buys per second Redis alone does with our
``live/lua/buy.lua`` (KEYS/ARGV as its header documents), and with the Node peer's script for
comparison. Every call is a new user, request and order id (``__rand_int__``), so every call
takes the full success path (stock and limit are set far above what the run can use).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from bench.procs import NODE_SRC, ROOT
from live.core import keys

CARD = "bench-ceiling"


def _node_script() -> str:
    """The Lua body of the Node peer's ``flashBuy`` command (between the backticks)."""
    src = (NODE_SRC / "server.js").read_text(encoding="utf-8")
    m = re.search(r"defineCommand\('flashBuy',\s*\{.*?lua:\s*`(.*?)`", src, re.S)
    if not m:
        raise RuntimeError("could not find flashBuy's Lua in the Node peer")
    return m.group(1)


def _redis_benchmark(port: int, requests: int, clients: int, pipeline: int, args: list[str]) -> float:
    exe = shutil.which("redis-benchmark")
    if not exe:
        raise RuntimeError("redis-benchmark is not on PATH")
    cmd = [exe, "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", str(clients), "-P", str(pipeline),
           "-r", "1000000000", "--csv", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    # CSV: header, then one row: "name","rps",... (name is the command line)
    last = [ln for ln in out.strip().splitlines() if ln and not ln.startswith('"test"')][-1]
    return float(last.split('","')[1].strip('"'))


def run(port: int, requests: int = 100_000, clients: int = 50) -> dict[str, Any]:
    """Buys per second for our buy.lua and the peer's script, unpipelined and pipelined (16)."""
    r = redis.Redis(port=port)
    now = int(time.time() * 1000)
    ours = (Path(ROOT) / "live" / "lua" / "buy.lua").read_text(encoding="utf-8")
    sha = r.script_load(ours)
    r.hset(keys.card_state(CARD), mapping={"status": "on_sale", "stock": 10**9, "left": 10**9, "limit": 10**9,
                                          "price": 1990, "starts_ms": 0, "ends_ms": 0, "room": "bench"})
    # The seventh key is the card's audience gate (fans); absent here: anyone may buy.
    our_keys = [keys.card_state(CARD), keys.card_bought(CARD), keys.card_requests(CARD), keys.card_orders(CARD),
                keys.card_deadlines(CARD), keys.card_stream(CARD), keys.card_fans(CARD)]
    # buy.lua takes a batch: now, pay_by, seq floor, then (user, qty, request, order) per tap; one tap here.
    our_args = ["EVALSHA", sha, str(len(our_keys)), *our_keys, str(now), str(now + 900_000), "0",
                "u__rand_int__", "1", "r__rand_int__", "o__rand_int__"]
    # Sanity: one call of each succeeds before we time thousands.
    probe = r.evalsha(sha, len(our_keys), *our_keys, now, now + 900_000, 0, "probe-user", 1, "probe-req",
                      "probe-order")
    if probe[0] != b"OK":
        raise RuntimeError(f"buy.lua probe failed: {probe!r}")
    out: dict[str, Any] = {"requests": requests, "clients": clients}
    # The peer's script is read from its checkout beside the project; without one (a worktree
    # elsewhere) only our script is measured.
    pk: list[str] = []
    node_args: list[str] = []
    if (NODE_SRC / "server.js").exists():
        node_sha = r.script_load(_node_script())
        pk = [f"peer:{{card:{CARD}}}", f"peer:{{card:{CARD}}}:bought", f"peer:{{card:{CARD}}}:req",
              f"peer:{{card:{CARD}}}:orders"]
        r.hset(pk[0], mapping={"left": 10**9, "limit": 10**9, "status": "on_sale"})
        node_args = ["EVALSHA", node_sha, "4", *pk, "u__rand_int__", "1", "r__rand_int__", "o__rand_int__", str(now)]
    for pipeline in (1, 16):
        out[f"buy_lua_p{pipeline}"] = _redis_benchmark(port, requests, clients, pipeline, our_args)
        if node_args:
            out[f"node_lua_p{pipeline}"] = _redis_benchmark(port, requests, clients, pipeline, node_args)
    orders = r.hlen(keys.card_orders(CARD))
    out["orders_created"] = int(orders)
    # Free the memory the run took so later benchmarks on this Redis start clean.
    r.delete(*our_keys, *pk)
    r.close()
    return out
