"""Where the memory of a connected viewer goes: ``python -m bench.memprof``.

    python -m bench.memprof [--viewers 2000] [--frames 25] [--top 25] [--procs 1]
                            [--no-rss-run] [--server-env LIVE_X=VALUE] [--json FILE]

Starts a private redis-server and the project server (``bench.procs.Stack``, as ``python -m
bench`` does), then joins ``--viewers`` viewers to one room with the load tester, as the
fan-out benchmark does (sign in as a guest, connect, ``room:join``), twice, each on a fresh
server:

1. **RSS run** (skip with ``--no-rss-run``): the server as it runs in production; RSS per
   viewer from ``/proc`` (``bench.loadbench.fanout``: after joining minus before the first
   guest, the issue's "including its guest session"; and after joining minus after the guests).
2. **Traced run**: the same server with ``bench/memprof_site/sitecustomize.py`` on its
   ``PYTHONPATH``: SIGUSR1 makes it collect garbage and dump a tracemalloc snapshot (the first
   one starts tracing, ``--frames`` frames per allocation). Snapshots are taken before the first guest, after
   the guests, and after every viewer joined; the differences, divided by the viewers that
   joined, are printed grouped by the allocating line, by file, by the innermost frame of the
   project's own code, by package, and by whole traceback (the top ``--top`` of each).

Tracing slows the server several-fold and its bookkeeping is itself memory: the traced run's
RSS is not a figure to quote (it is printed, marked so); the Python heap per viewer is. Both
runs are one process each with background loops off (``LIVE_BACKGROUND_LOOPS=false``, as the
serving process of ``python -m bench`` runs; no worker is started: nothing is bought).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import sysconfig
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.loadbench import Sampler, fanout
from bench.procs import ROOT, Proc, Stack, machine, server_env
from live.loadtest import Hooks, LoadConfig, run
from live.loadtest.worker import raise_fd_limit

SITE_DIR = Path(__file__).resolve().parent / "memprof_site"
SETTLE_S = 2.0  # as the fan-out benchmark: let connection bookkeeping settle before sampling
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
PURELIB = Path(sysconfig.get_paths()["purelib"]).resolve()
PHASES = ("before_connect", "after_guests", "after_join")

Frame = tuple[str, int]  # (filename, line)
Key = tuple[Frame, ...]  # a traceback, most recent frame last


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def short(filename: str) -> str:
    """A path without the site-packages, stdlib or checkout prefix."""
    for base, tag in ((PURELIB, ""), (STDLIB, "stdlib/"), (ROOT, "")):
        try:
            return tag + str(Path(filename).resolve().relative_to(base))
        except ValueError:
            continue
    return filename


def package(filename: str) -> str:
    """The top-level package a file belongs to (``live``, ``aiohttp``, ``stdlib:asyncio``, …)."""
    s = short(filename)
    if s.startswith("stdlib/"):
        parts = s[len("stdlib/"):].split("/")
        return "stdlib:" + (parts[0].removesuffix(".py") if parts else "?")
    return s.split("/", 1)[0].removesuffix(".py")


def is_project(filename: str) -> bool:
    try:
        Path(filename).resolve().relative_to(ROOT / "live")
        return True
    except ValueError:
        return False


def load(path: Path) -> dict[Key, tuple[int, int]]:
    """A snapshot as traceback → (bytes, blocks); tracemalloc's own allocations left out."""
    snap = tracemalloc.Snapshot.load(str(path)).filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<unknown>"),
    ))
    out: dict[Key, tuple[int, int]] = {}
    for stat in snap.statistics("traceback"):
        key = tuple((f.filename, f.lineno) for f in stat.traceback)
        out[key] = (stat.size, stat.count)
    return out


def diff(old: dict[Key, tuple[int, int]], new: dict[Key, tuple[int, int]]) -> dict[Key, tuple[int, int]]:
    """What ``new`` holds more than ``old``, per traceback (negative: freed since)."""
    out: dict[Key, tuple[int, int]] = {}
    for key in old.keys() | new.keys():
        s0, c0 = old.get(key, (0, 0))
        s1, c1 = new.get(key, (0, 0))
        if s1 != s0 or c1 != c0:
            out[key] = (s1 - s0, c1 - c0)
    return out


Grouper = Callable[[Key], str]


def by_line(tb: Key) -> str:
    f, n = tb[-1]
    return f"{short(f)}:{n}"


def by_file(tb: Key) -> str:
    return short(tb[-1][0])


def by_project(tb: Key) -> str:
    """The innermost frame of ``live/``: which line of ours caused the allocation."""
    for f, n in reversed(tb):
        if is_project(f):
            return f"{short(f)}:{n}"
    return f"(no project frame; {package(tb[-1][0])})"


def by_package(tb: Key) -> str:
    """The innermost frame's package that is not the standard library (else the stdlib module)."""
    for f, _ in reversed(tb):
        p = package(f)
        if not p.startswith("stdlib:"):
            return p
    return package(tb[-1][0])


def by_traceback(tb: Key) -> str:
    """The traceback, innermost first, at most 8 frames."""
    frames = [f"{short(f)}:{n}" for f, n in reversed(tb)][:8]
    return " ← ".join(frames)


GROUPS: dict[str, Grouper] = {"lineno": by_line, "filename": by_file, "project frame": by_project,
                              "package": by_package, "traceback": by_traceback}


@dataclass
class Breakdown:
    """One phase's heap growth per viewer, grouped several ways."""

    viewers: int
    total_bytes: int
    total_blocks: int
    groups: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)

    @classmethod
    def of(cls, d: dict[Key, tuple[int, int]], viewers: int, top: int) -> Breakdown:
        b = cls(viewers, sum(s for s, _ in d.values()), sum(c for _, c in d.values()))
        for name, fn in GROUPS.items():
            acc: dict[str, list[int]] = {}
            for tb, (size, count) in d.items():
                a = acc.setdefault(fn(tb), [0, 0])
                a[0] += size
                a[1] += count
            rows = sorted(acc.items(), key=lambda kv: -kv[1][0])[:top]
            b.groups[name] = [(k, round(s / viewers, 1), round(c / viewers, 2)) for k, (s, c) in rows]
        return b

    def print(self, title: str) -> None:
        print(f"\n## {title}: {self.total_bytes / self.viewers / 1024:.2f} KB and "
              f"{self.total_blocks / self.viewers:.1f} blocks of Python heap per viewer ({self.viewers:,} viewers)")
        for name, rows in self.groups.items():
            print(f"\n### by {name} (top {len(rows)}; bytes and blocks per viewer)")
            for k, s, c in rows:
                print(f"{s:9.1f} B {c:7.2f}  {k}")

    def to_json(self) -> dict[str, Any]:
        return {"viewers": self.viewers, "bytes_per_viewer": round(self.total_bytes / self.viewers, 1),
                "blocks_per_viewer": round(self.total_blocks / self.viewers, 2),
                "groups": {k: [{"key": a, "bytes": s, "blocks": c} for a, s, c in v] for k, v in self.groups.items()}}


class Snapshotter:
    """Asks the traced server for a snapshot (SIGUSR1) and waits until it is on disk."""

    def __init__(self, proc: Proc, folder: Path) -> None:
        self.proc = proc
        self.folder = folder
        self.taken: list[Path] = []

    async def take(self, timeout: float = 600) -> Path:
        path = self.folder / f"snap-{len(self.taken)}.pickle"
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.popen.poll() is not None:
                raise RuntimeError(f"the traced server exited with {self.proc.popen.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no snapshot {path.name} within {timeout:.0f}s")
            await asyncio.sleep(0.2)
        self.taken.append(path)
        return path


async def traced_run(stack: Stack, redis_url: str, a: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    folder = stack.dir / "memprof"
    folder.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(p for p in (str(SITE_DIR), os.environ.get("PYTHONPATH", "")) if p)
    proc = stack.start_project(redis_url, False, **{**env, "BENCH_MEMPROF_FRAMES": str(a.frames),
                                                    "PYTHONPATH": pythonpath, "BENCH_MEMPROF_DIR": str(folder),
                                                    "LIVE_BACKGROUND_LOOPS": "false"})
    print(f"traced server pid {proc.pid}, {a.frames} frames per allocation; load {loadavg()}", flush=True)
    sampler = Sampler(proc)
    snaps = Snapshotter(proc, folder)
    snap_at: dict[str, Path] = {}

    def hook(phase: str, settle: float) -> Callable[[], Any]:
        async def h() -> None:
            await asyncio.sleep(settle)
            sampler.mark(phase)  # RSS before the snapshot's own memory
            t0 = time.monotonic()
            snap_at[phase] = await snaps.take()
            print(f"snapshot {phase}: {time.monotonic() - t0:.1f}s, load {loadavg()}", flush=True)
        return h

    cfg = LoadConfig(url=proc.url, scenario="flash", viewers=a.viewers, stock=1, taps=0, procs=a.procs,
                     progress=False, concurrency=200, timeout=120, audit_timeout=60)
    hooks = Hooks(before_connect=hook("before_connect", 0.0), after_guests=hook("after_guests", SETTLE_S),
                  after_join=hook("after_join", SETTLE_S))
    report = await run(cfg, hooks)
    joined = int(report.data["connected"])
    stack.stop(proc)
    if not joined:
        raise RuntimeError("no viewer joined")
    heaps = {p: load(snap_at[p]) for p in PHASES}
    parts = {
        "guest session (sign-in)": diff(heaps["before_connect"], heaps["after_guests"]),
        "connection (connect + room:join)": diff(heaps["after_guests"], heaps["after_join"]),
        "viewer incl. session": diff(heaps["before_connect"], heaps["after_join"]),
    }
    out: dict[str, Any] = {"viewers": a.viewers, "joined": joined, "frames": a.frames,
                           "rss_kb_per_viewer_traced": round(
                               (sampler.rss["after_join"] - sampler.rss["before_connect"]) / joined / 1024, 1),
                           "breakdown": {}}
    for title, d in parts.items():
        b = Breakdown.of(d, joined, a.top)
        b.print(title)
        out["breakdown"][title] = b.to_json()
    print(f"\n(traced process RSS per viewer incl. session, tracemalloc's own overhead included — not a figure "
          f"to quote: {out['rss_kb_per_viewer_traced']} KB)")
    return out


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    env = server_env(a.server_env)
    res: dict[str, Any] = {"command": "python -m bench.memprof " + " ".join(sys.argv[1:]), "machine": machine(),
                           "server_env": env, "loadavg_before": loadavg()}
    stack = Stack()
    with stack.running():
        redis_url = stack.start_redis()
        if a.rss_run:
            proc = stack.start_project(redis_url, False, **{**env, "LIVE_BACKGROUND_LOOPS": "false"})
            print(f"RSS run: server pid {proc.pid}, {a.viewers:,} viewers; load {loadavg()}", flush=True)
            f = await fanout(proc, a.viewers, a.procs)
            stack.stop(proc)
            res["rss"] = {k: f[k] for k in ("viewers", "connected", "rss_mb_before", "rss_mb_joined", "kb_per_viewer",
                                            "kb_per_viewer_incl_session")}
            res["rss"]["loadavg"] = loadavg()
            print(f"RSS per viewer: {f['kb_per_viewer_incl_session']} KB incl. session, {f['kb_per_viewer']} KB "
                  f"connection only ({f['connected']:,} joined; load {loadavg()})", flush=True)
        res["traced"] = await traced_run(stack, redis_url, a, env)
    res["loadavg_after"] = loadavg()
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memprof", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=2000)
    p.add_argument("--frames", type=int, default=25, help="frames kept per allocation")
    p.add_argument("--top", type=int, default=25, help="rows per grouping")
    p.add_argument("--procs", type=int, default=1, help="load-tester processes")
    p.add_argument("--no-rss-run", dest="rss_run", action="store_false", help="only the traced run")
    p.add_argument("--server-env", action="append", default=[], metavar="LIVE_X=VALUE")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    try:
        res = asyncio.run(main_async(a))
    except Exception as e:
        print(f"memprof failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if a.json:
        a.json.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
