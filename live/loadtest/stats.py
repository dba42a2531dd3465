"""Small, dependency-free statistics for load-test samples (times in seconds in, ms out)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (``p`` in 0..100); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summary_ms(seconds: Iterable[float], keys: Sequence[str] = ("p50", "p95", "p99", "max")) -> dict[str, float]:
    """Percentiles in milliseconds (rounded to 0.01 ms) for keys like ``p50``/``p99``/``max``."""
    vals = sorted(seconds)
    out: dict[str, float] = {}
    for k in keys:
        v = (vals[-1] if vals else 0.0) if k == "max" else percentile(vals, float(k[1:]))
        out[k] = round(v * 1000.0, 2)
    return out


def histogram(values: Sequence[float], bins: int = 40) -> list[tuple[float, float, int]]:
    """``(lo, hi, count)`` bins on a log scale (latencies span decades); empty input → []."""
    pos = [v for v in values if v > 0]
    if not pos:
        return []
    lo, hi = min(pos), max(pos)
    if hi <= lo * 1.0001:
        return [(lo, hi, len(pos))]
    llo, lhi = math.log10(lo), math.log10(hi)
    step = (lhi - llo) / bins
    counts = [0] * bins
    for v in pos:
        i = min(bins - 1, int((math.log10(v) - llo) / step))
        counts[i] += 1
    return [(10 ** (llo + i * step), 10 ** (llo + (i + 1) * step), c) for i, c in enumerate(counts)]


def timeline(times: Iterable[float], t0: float, bin_s: float = 0.1) -> list[int]:
    """Events per ``bin_s`` bucket since ``t0`` (events before ``t0`` go into the first bucket)."""
    counts: list[int] = []
    for t in times:
        i = max(0, int((t - t0) / bin_s))
        if i >= len(counts):
            counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += 1
    return counts


def cdf(values: Sequence[float], points: int = 100) -> list[tuple[float, float]]:
    """``(value, fraction ≤ value)`` at up to ``points`` evenly spaced ranks of sorted values."""
    vals = sorted(values)
    n = len(vals)
    if n == 0:
        return []
    step = max(1, n // points)
    out = [(vals[i], (i + 1) / n) for i in range(0, n, step)]
    if out[-1][1] < 1.0:
        out.append((vals[-1], 1.0))
    return out
