"""Per-message latency of ``Guard.check`` (p50/p99/max) on real chat lines; OCR excluded.

    python -m bench.guard_bench [tests/data/guard_fresh_2026-11.tsv ...]

Each message is checked ``--rounds`` times after a warm-up; the percentiles are over all
single calls. Two clocks: wall time (``perf_counter_ns``, includes being preempted by other
processes on a shared box) and this thread's CPU time (``thread_time_ns``, the work itself).
"""

from __future__ import annotations

import argparse
import gc
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Guard.check latency per message")
    ap.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    texts = [row.text for path in args.files for row in load(path)]
    guard = Guard()
    for name, clock in (("wall", time.perf_counter_ns), ("cpu", time.thread_time_ns)):
        samples = measure(guard, texts, args.rounds, clock)

        def pct(q: float, samples: list[int] = samples) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))] / 1000

        print(f"{name}: {len(texts)} messages x {args.rounds} rounds: p50 {pct(0.5):.1f} µs, "
              f"p90 {pct(0.9):.1f} µs, p99 {pct(0.99):.1f} µs, max {samples[-1] / 1000:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
