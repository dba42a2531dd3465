"""Per-message latency of ``Guard.check`` (p50/p99/max) on real chat lines; OCR excluded.

    python -m bench.guard_bench [tests/data/guard_corpus.tsv ...]
    git show main:live/community/guard.py > /tmp/guard_v1.py
    python -m bench.guard_bench --guard-file /tmp/guard_v1.py   # another version, same box, same load

Each message is checked ``--rounds`` times after a warm-up; the percentiles are over all
single calls. Two clocks: wall time (``perf_counter_ns``, includes being preempted by other
processes on a shared box) and this thread's CPU time (``thread_time_ns``, the work itself).
A third line, "cpu/msg", is the percentiles over messages of each message's median CPU time
across its rounds: what a message costs, with the rare call slowed by another process's cache
and interrupt traffic taken out. It is reported next to the per-call figures, never instead.
A last line, "noise", times a fixed pure-Python loop of about the guard's median cost the same
way: on a quiet machine its p99 is close to its p50; how far apart they are says how much of
the guard's tail is the machine's.

The default texts are the tuning sets (corpus and tuning file), not the held-out sets: speed
is profiled on these, and a held-out set is kept out of every kind of tuning.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.guard_eval import load
from live.community.guard import Guard

DEFAULT_FILES = [Path("tests/data/guard_corpus.tsv"), Path("tests/data/guard_tuning_2026-11.tsv")]


def measure(guard: Guard, texts: list[str], rounds: int, clock: Callable[[], int]) -> list[list[int]]:
    """Nanoseconds of every single ``check`` call on ``clock``: one list per round, in text order."""
    for text in texts:  # warm the character tables, as a running server has
        guard.check(text)
    samples: list[list[int]] = []
    gc.disable()
    try:
        for _ in range(rounds):
            row = []
            for text in texts:
                t0 = clock()
                guard.check(text)
                row.append(clock() - t0)
            samples.append(row)
    finally:
        gc.enable()
    return samples


def _fixed_work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def noise(target_ns: int, calls: int) -> list[int]:
    """CPU time of ``calls`` runs of a fixed loop sized to take about ``target_ns``."""
    n = 100
    t0 = time.thread_time_ns()
    for _ in range(100):
        _fixed_work(n)
    per = max(1, (time.thread_time_ns() - t0) // 100)
    n = max(1, n * target_ns // per)
    samples = []
    gc.disable()
    try:
        for _ in range(calls):
            t0 = time.thread_time_ns()
            _fixed_work(n)
            samples.append(time.thread_time_ns() - t0)
    finally:
        gc.enable()
    return samples


def summary(name: str, samples: list[int], unit: str) -> str:
    samples = sorted(samples)

    def pct(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))] / 1000

    return (f"{name}: {unit}: p50 {pct(0.5):.1f} µs, p90 {pct(0.9):.1f} µs, p99 {pct(0.99):.1f} µs, "
            f"max {samples[-1] / 1000:.1f} µs")


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
    calls = f"{len(texts)} messages x {args.rounds} rounds"
    for name, clock in (("wall", time.perf_counter_ns), ("cpu", time.thread_time_ns)):
        rounds = measure(guard, texts, args.rounds, clock)
        print(summary(name, [ns for row in rounds for ns in row], calls))
        if name == "cpu":
            medians = [int(statistics.median(per_text)) for per_text in zip(*rounds, strict=True)]
            print(summary("cpu/msg", medians, f"{len(texts)} messages, median of {args.rounds} rounds each"))
            print(summary("noise", noise(int(statistics.median(medians)), len(texts) * args.rounds),
                          "a fixed loop of the guard's median cost, same number of calls"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
