"""Measure the private-trading guard on a labelled TSV: precision, recall, F1, per family.

    python -m bench.guard_eval tests/data/guard_fresh_2026-11.tsv

Rows are ``label<TAB>family<TAB>text`` (or ``label<TAB>text``); ``pos`` is off-platform
steering, ``neg`` ordinary chat; lines starting with ``#`` are comments. A message counts as
caught when the guard blocks it; with ``--hold`` a message held for review counts too.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from live.community.guard import Guard
from live.community.guard_model import NgramModel


@dataclass(frozen=True)
class Row:
    label: str
    family: str
    text: str


def load(path: Path) -> list[Row]:
    """The labelled rows of a TSV file."""
    rows: list[Row] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        label, family, text = (parts[0], parts[1], parts[2]) if len(parts) >= 3 else (parts[0], "-", parts[1])
        if label not in ("pos", "neg"):
            raise ValueError(f"bad label {label!r} in {path}")
        rows.append(Row(label, family, text))
    return rows


@dataclass(frozen=True)
class Report:
    tp: int
    fp: int
    fn: int
    tn: int
    by_family: dict[str, tuple[int, int]]  # family → (flagged, total)
    misses: list[Row]
    false_alarms: list[Row]

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def evaluate(rows: list[Row], flagged: Callable[[str], bool]) -> Report:
    """Score ``flagged`` (True = refused) on ``rows``."""
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    tp = fp = fn = tn = 0
    misses: list[Row] = []
    alarms: list[Row] = []
    for row in rows:
        hit = flagged(row.text)
        key = f"{row.label}/{row.family}"
        totals[key] += 1
        hits[key] += hit
        if row.label == "pos":
            tp += hit
            fn += not hit
            if not hit:
                misses.append(row)
        else:
            fp += hit
            tn += not hit
            if hit:
                alarms.append(row)
    return Report(tp, fp, fn, tn, {k: (hits[k], totals[k]) for k in sorted(totals)}, misses, alarms)


def render(name: str, rep: Report) -> str:
    """A Markdown summary of one report."""
    lines = [f"{name}: precision {rep.precision:.3f}, recall {rep.recall:.3f}, F1 {rep.f1:.3f} "
             f"(tp {rep.tp}, fp {rep.fp}, fn {rep.fn}, tn {rep.tn})", "",
             "| family | refused / total |", "|---|---|"]
    lines += [f"| {k} | {h}/{t} |" for k, (h, t) in rep.by_family.items()]
    return "\n".join(lines)


def flagger(guard: Guard, *, hold: bool, chat: bool = False) -> Callable[[str], bool]:
    """True when the guard refuses ``text`` (blocks it, or with ``hold`` also holds it). With
    ``chat``, as chat reads a message (``verdict_with``: the learned signal joins the rules)."""
    verdict = getattr(guard, "verdict", None)
    if chat:
        verdict = lambda text: guard.verdict_with(text, [])  # noqa: E731
    if verdict is None:  # the v1 guard: a finding is a block
        return lambda text: guard.check(text) is not None
    if hold:
        return lambda text: verdict(text).action != "allow"
    return lambda text: verdict(text).action == "block"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--hold", action="store_true", help="count messages held for review as refused")
    ap.add_argument("--errors", action="store_true", help="list misses and false alarms")
    ap.add_argument("--rules-only", action="store_true",
                    help="the rules alone, without the n-gram model chat adds (the v2 figures)")
    args = ap.parse_args(argv)
    guard = Guard() if args.rules_only else Guard(model=NgramModel.load())
    for path in args.files:
        rows = load(path)
        reports = [("block", evaluate(rows, flagger(guard, hold=False, chat=not args.rules_only)))]
        if args.hold:
            reports.append(("block or hold", evaluate(rows, flagger(guard, hold=True, chat=not args.rules_only))))
        for mode, rep in reports:
            print(render(f"{path.name} [{mode}]", rep))
            print()
            if args.errors:
                for row in rep.misses:
                    print(f"MISS\t{row.family}\t{row.text}")
                for row in rep.false_alarms:
                    print(f"FALSE\t{row.family}\t{row.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
