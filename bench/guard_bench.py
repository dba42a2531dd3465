"""Per-message latency of ``Guard.check`` (p50/p99/max) on real chat lines; OCR excluded.

    python -m bench.guard_bench [tests/data/guard_fresh_2026-11.tsv ...]
    git show main:live/community/guard.py > /tmp/guard_v1.py
    python -m bench.guard_bench --guard-file /tmp/guard_v1.py   # another version, same box, same load

Each message is checked ``--rounds`` times after a warm-up; the percentiles are over all
single calls. Two clocks: wall time (``perf_counter_ns``, includes being preempted by other
processes on a shared box) and this thread's CPU time (``thread_time_ns``, the work itself).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.guard_eval import load
from live.community.guard import Guard

DEFAULT_FILES = [Path("tests/data/guard_fresh_2026-11.tsv"), Path("tests/data/guard_corpus.tsv")]


def measure(guard: Guard, texts: list[str], rounds: int, clock: Callable[[], int]) -> list[int]:
    """Nanoseconds of every single ``check`` call on ``clock``, sorted."""
    for text in texts:  # warm the character tables, as a running server has
        guard.check(text)
    samples: list[int] = []
    gc.disable()
    try:
        for _ in range(rounds):
            for text in texts:
                t0 = clock()
                guard.check(text)
                samples.append(clock() - t0)
    finally:
        gc.enable()
    samples.sort()
    return samples


def _load_guard(path: Path) -> type[Guard]:
    spec = importlib.util.spec_from_file_location("guard_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    cls: type[Guard] = module.Guard
    return cls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Guard.check latency per message")
    ap.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--guard-file", type=Path, help="measure the Guard of this file instead (e.g. an old version)")
    args = ap.parse_args(argv)
    texts = [row.text for path in args.files for row in load(path)]
    guard = _load_guard(args.guard_file)() if args.guard_file else Guard()
    for name, clock in (("wall", time.perf_counter_ns), ("cpu", time.thread_time_ns)):
        samples = measure(guard, texts, args.rounds, clock)

        def pct(q: float, samples: list[int] = samples) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))] / 1000

        print(f"{name}: {len(texts)} messages x {args.rounds} rounds: p50 {pct(0.5):.1f} µs, "
              f"p90 {pct(0.9):.1f} µs, p99 {pct(0.99):.1f} µs, max {samples[-1] / 1000:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
