"""Buy throughput and card fan-out / memory per viewer, driven by ``live.loadtest``.

Each measurement runs the same load-test configuration against the project server and the
Node.js reference and samples the server process from ``/proc`` between phases.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field
from typing import Any

from bench.procs import Proc, cpu_seconds, rss_bytes
from live.loadtest import Hooks, LoadConfig, run


@dataclass
class Sampler:
    """CPU and RSS of one server process at named moments."""

    proc: Proc
    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.cpu[name] = cpu_seconds(self.proc.pid)
        self.rss[name] = rss_bytes(self.proc.pid)


def _hooks(sampler: Sampler, settle_s: float) -> Hooks:
    async def before() -> None:
        sampler.mark("before_connect")

    async def guests() -> None:
        await asyncio.sleep(settle_s)
        sampler.mark("after_guests")

    async def joined() -> None:
        # Let connection bookkeeping (presence pushes, buffers) settle before reading RSS.
        await asyncio.sleep(settle_s)
        sampler.mark("after_join")

    async def done() -> None:
        sampler.mark("after_run")

    return Hooks(before_connect=before, after_guests=guests, after_join=joined, after_run=done)


async def buys(proc: Proc, viewers: int, taps: int, procs: int) -> dict[str, Any]:
    """Every viewer taps ``taps`` times on a card with stock for all of them: the full buy path
    (a new order per tap, then persisted), not the cheap sold-out rejection."""
    sampler = Sampler(proc)
    cfg = LoadConfig(url=proc.url, scenario="flash", viewers=viewers, stock=viewers * taps, taps=taps, limit=taps,
                     procs=procs, progress=False, audit_timeout=120)
    report = await run(cfg, _hooks(sampler, 0.5))
    sampler.mark("after_audit")
    d = report.data
    acks = int(d["acks"])
    cpu_ack = sampler.cpu["after_run"] - sampler.cpu["after_join"]
    cpu_all = sampler.cpu["after_audit"] - sampler.cpu["after_join"]
    gc.collect()
    return {
        "server": proc.name, "viewers": viewers, "taps": taps, "acks": acks, "sold": d["sold"],
        "verdict": d.get("verdict"), "lost_orders": d.get("lost_orders"), "oversold": d.get("oversold"),
        "duplicate_orders": d.get("duplicate_orders"), "over_limit_users": d.get("over_limit_users"),
        "audit": d.get("audit"), "buys_per_s": d["buys_per_s"], "latency_ms": d["latency_ms"],
        "server_cpu_us_per_ack": round(cpu_ack / acks * 1e6, 1) if acks else None,
        "server_cpu_us_per_ack_incl_persist": round(cpu_all / acks * 1e6, 1) if acks else None,
        "errors": d["errors"], "client": d["client"],
    }


async def fanout(proc: Proc, viewers: int, procs: int) -> dict[str, Any]:
    """Card fan-out to ``viewers`` connected viewers, and server RSS per connected viewer."""
    sampler = Sampler(proc)
    cfg = LoadConfig(url=proc.url, scenario="flash", viewers=viewers, stock=1, taps=0, procs=procs,
                     progress=False, concurrency=200, timeout=120, audit_timeout=60)
    report = await run(cfg, _hooks(sampler, 2.0))
    d = report.data
    joined = int(d["connected"])
    rss_delta = sampler.rss["after_join"] - sampler.rss["after_guests"]
    # With the guest sessions the server made for them (the measure: a viewer signs in,
    # then connects): from before the first guest was made.
    rss_delta_session = sampler.rss["after_join"] - sampler.rss["before_connect"]
    return {
        "server": proc.name, "viewers": viewers, "connected": joined, "fanout_ms": d["fanout_ms"],
        "fanout_after_listing_ms": d.get("fanout_after_listing_ms"),
        "fanout_after_first_ms": d.get("fanout_after_first_ms"),
        "fanout_before_answer": d.get("fanout_before_answer"),
        "card_create_ms": d.get("card_create_ms"),
        "rss_mb_before": round(sampler.rss["after_guests"] / 2**20, 1),
        "rss_mb_joined": round(sampler.rss["after_join"] / 2**20, 1),
        "kb_per_viewer": round(rss_delta / joined / 1024, 1) if joined else None,
        "kb_per_viewer_incl_session": round(rss_delta_session / joined / 1024, 1) if joined else None,
        "server_cpu_s_connect": round(sampler.cpu["after_join"] - sampler.cpu["after_guests"], 2),
        "errors": d["errors"], "verdict": d.get("verdict"), "sold": d["sold"],
        "client_cpu_us_per_connection": d["client"]["cpu_us_per_connection"],
        # The load generator's CPU per frame while it waited for and read the card: on a small box
        # it shares the cores with the server, so its cost is part of every viewer's wait.
        "client_cpu_us_per_message": d["client"]["cpu_us_per_message"],
    }
