"""Train, cross-validate and export the guard's character n-gram model (issue 17).

    python -m bench.guard_train                 # CV report, thresholds, writes live/community/guard_model.json
    python -m bench.guard_train --no-export     # CV report only
    python -m bench.guard_train --bench         # µs per NgramModel.score call (CPU and wall), shipped model

Training data: tests/data/guard_corpus.tsv, tests/data/guard_tuning_2026-11.tsv and
tests/data/guard_train_2026-11c.tsv. The fresh held-out sets (guard_fresh_*) are never read here.

Cross-validation is by group, never by row: rows of guard_train_2026-11c.tsv that come from one
hand-written template (bench/guard_train_data.py) share a group, and rows of the other files
that are equal after normalisation share one, so a template's other fillings are never in the
training folds when one of them is scored. A second run leaves out one whole positive family at a
time, to show what the model does on a disguise it has never been shown.

scikit-learn is needed here only (the ``dev`` extra); inference in live/community/guard_model.py
is pure Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.guard_eval import load
from bench.guard_train_data import expand
from live.community.guard_model import MODEL_FILE, NgramModel, combine, features, normalise

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TRAIN_FILES = ("guard_corpus.tsv", "guard_tuning_2026-11.tsv", "guard_train_2026-11c.tsv")
TEMPLATED = "guard_train_2026-11c.tsv"
MODEL_PATH = ROOT / "live" / "community" / MODEL_FILE
SEED = 2611
FOLDS = 5
C = 4.0  # inverse L2 strength (``--compare-c`` prints the grouped-CV log loss of other values)
MIN_WEIGHT = 1e-3  # weights smaller than this are dropped from the exported file
HARD_NEG_PRECISION = 0.97
BLOCK_PRECISION = 1.0  # the model alone blocks no negative out of fold


@dataclass(frozen=True)
class Sample:
    source: str
    label: int  # 1 = pos
    family: str
    text: str
    group: str


def load_samples(data: Path = DATA) -> list[Sample]:
    """All training rows with their CV group."""
    samples: list[Sample] = []
    for name in TRAIN_FILES:
        rows = load(data / name)
        if name == TEMPLATED:
            expected = expand()
            if [(r.label, r.family, r.text) for r in rows] != [(lab, fam, txt) for lab, fam, txt, _ in expected]:
                raise SystemExit(f"{name} is not what bench/guard_train_data.py writes: regenerate it")
            groups = [f"tpl:{tpl}" for *_, tpl in expected]
        else:
            groups = [f"txt:{normalise(r.text)}" for r in rows]
        for r, g in zip(rows, groups, strict=True):
            family = r.family if r.family != "-" else f"corpus_{r.label}"
            samples.append(Sample(name, int(r.label == "pos"), family, r.text, g))
    return _merge_equal_texts(samples)


def _merge_equal_texts(samples: list[Sample]) -> list[Sample]:
    """Rows equal after normalisation share a group even across files or templates (union-find),
    so the same message is never on both sides of a fold."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in samples:
        a, b = find(s.group), find(f"txt:{normalise(s.text)}")
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [Sample(s.source, s.label, s.family, s.text, find(s.group)) for s in samples]


def data_digest(data: Path = DATA) -> str:
    """sha256 over the training files, recorded in the model so a stale model is noticed."""
    h = hashlib.sha256()
    for name in TRAIN_FILES:
        h.update((data / name).read_bytes())
    return h.hexdigest()


def _analyzer(text: str) -> list[str]:
    return sorted(features(normalise(text)))


def fit(texts: Sequence[str], labels: Sequence[int], c: float = C) -> NgramModel:
    """A logistic regression on binary n-gram features, as an ``NgramModel``. Deterministic."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer(analyzer=_analyzer, binary=True)
    x = vec.fit_transform(texts)
    clf = LogisticRegression(C=c, max_iter=5000, solver="lbfgs", class_weight="balanced")
    clf.fit(x, np.asarray(labels))
    coef = clf.coef_[0]
    weights = {feat: round(float(coef[i]), 4) for feat, i in sorted(vec.vocabulary_.items())
               if abs(coef[i]) >= MIN_WEIGHT}
    return NgramModel(round(float(clf.intercept_[0]), 4), weights)


def folds(samples: Sequence[Sample], k: int = FOLDS, seed: int = SEED) -> list[np.ndarray]:
    """Test indices of ``k`` folds stratified by label, grouped by template/text."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray([s.label for s in samples])
    g = np.asarray([s.group for s in samples])
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in cv.split(np.zeros(len(samples)), y, g)]


def out_of_fold(samples: Sequence[Sample], c: float = C) -> np.ndarray:
    """Each sample's probability from a model that did not see its group."""
    p = np.zeros(len(samples))
    for test in folds(samples):
        held = set(test.tolist())
        train = [s for i, s in enumerate(samples) if i not in held]
        model = fit([s.text for s in train], [s.label for s in train], c)
        for i in test:
            p[i] = model.score(samples[i].text)
    return p


def leave_family_out(samples: Sequence[Sample], p_oof: np.ndarray) -> dict[str, np.ndarray]:
    """For each positive family: its rows scored by models trained without that family at all
    (and, as usual, without the test fold's groups)."""
    fams = sorted({s.family for s in samples if s.label == 1 and not s.family.startswith("corpus")})
    out: dict[str, np.ndarray] = {}
    fold_list = folds(samples)
    for fam in fams:
        idx = [i for i, s in enumerate(samples) if s.family == fam]
        p = np.zeros(len(idx))
        pos_of = {i: j for j, i in enumerate(idx)}
        for test in fold_list:
            held = set(test.tolist())
            train = [s for i, s in enumerate(samples) if i not in held and s.family != fam]
            model = fit([s.text for s in train], [s.label for s in train])
            for i in test:
                if i in pos_of:
                    p[pos_of[i]] = model.score(samples[i].text)
        out[fam] = p
    return out


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


class _Act:
    __slots__ = ("action",)

    def __init__(self, action: str) -> None:
        self.action = action


def actions(rules: Sequence[str], p: np.ndarray, t_hold: float, t_block: float) -> list[str]:
    return [combine(_Act(r), float(q), t_hold, t_block) for r, q in zip(rules, p, strict=True)]


def pr(samples: Sequence[Sample], flagged: Sequence[bool],
       keep: Sequence[bool] | None = None) -> tuple[float, float, int, int]:
    """Precision, recall, false positives, false negatives over the kept samples."""
    tp = fp = fn = 0
    for i, s in enumerate(samples):
        if keep is not None and not keep[i]:
            continue
        if flagged[i] and s.label:
            tp += 1
        elif flagged[i]:
            fp += 1
        elif s.label:
            fn += 1
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    return prec, rec, fp, fn


def choose_thresholds(samples: Sequence[Sample], rules: Sequence[str], p: np.ndarray) -> tuple[float, float]:
    """The lowest t_hold keeping flagged precision ≥ 0.97 over positives + hard negatives and over
    all rows, and the lowest t_block at which the model alone blocks no negative (out-of-fold):
    a block has no moderator behind it."""
    hard = [s.label == 1 or s.family.startswith("hard") for s in samples]
    grid = [round(x, 3) for x in np.arange(0.5, 0.996, 0.01)] + [0.996, 0.997, 0.998, 0.999]
    t_block = next((t for t in grid if pr(samples, [q >= t for q in p])[0] >= BLOCK_PRECISION), 0.999)
    for t in grid:
        flagged = [a != "allow" for a in actions(rules, p, min(t, t_block), t_block)]
        if min(pr(samples, flagged, hard)[0], pr(samples, flagged)[0]) >= HARD_NEG_PRECISION:
            return min(t, t_block), t_block
    return t_block, t_block


def report(samples: Sequence[Sample], rules: Sequence[str], p: np.ndarray, lfo: dict[str, np.ndarray],
           t_hold: float, t_block: float) -> None:
    y = np.asarray([s.label for s in samples])
    print(f"rows {len(samples)} (pos {int(y.sum())}, neg {int(len(y) - y.sum())}), groups "
          f"{len({s.group for s in samples})}, {FOLDS}-fold CV grouped by template/text, C={C}")
    print(f"out-of-fold log loss {log_loss(y, p):.3f}; thresholds t_hold={t_hold} t_block={t_block}")
    hard = [s.label == 1 or s.family.startswith("hard") for s in samples]
    combos = {
        "rules (Guard on main)": (rules, ),
        "model ≥ t": (["allow"] * len(samples), ),
        "rules + model (combine)": (rules, ),
    }
    print("\nflagged = held or blocked; 'hard' = precision over positives + hard negatives only")
    print(f"{'signal':26} {'source':26} {'flag P':>7} {'flag R':>7} {'hardP':>6} {'block P':>8} {'block R':>7}")
    for name, (base,) in combos.items():
        acts = list(base) if name.startswith("rules (") else actions(base, p, t_hold, t_block)
        for src in (None, *TRAIN_FILES):
            keep = [src is None or s.source == src for s in samples]
            fl = [a != "allow" for a in acts]
            bl = [a == "block" for a in acts]
            fp_, fr, _, _ = pr(samples, fl, keep)
            hp, _, _, _ = pr(samples, fl, [k and h for k, h in zip(keep, hard, strict=True)])
            bp, br, _, _ = pr(samples, bl, keep)
            print(f"{name:26} {src or 'all':26} {fp_:7.3f} {fr:7.3f} {hp:6.3f} {bp:8.3f} {br:7.3f}")
    print("\nper family (flagged / total; blocked): rules | model alone | combined — out-of-fold;"
          " last column: recall of the model trained WITHOUT that family (model ≥ t_hold)")
    model_acts = actions(["allow"] * len(samples), p, t_hold, t_block)
    comb_acts = actions(rules, p, t_hold, t_block)
    by: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by[(s.label, s.family)].append(i)
    for (label, fam), idx in sorted(by.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        cols = []
        for acts in (list(rules), model_acts, comb_acts):
            f = sum(acts[i] != "allow" for i in idx)
            b = sum(acts[i] == "block" for i in idx)
            cols.append(f"{f:4d}/{len(idx):<4d} ({b:4d})")
        extra = ""
        if fam in lfo:
            extra = f"  unseen-family recall {float(np.mean(lfo[fam] >= t_hold)):.3f}"
        print(f"{'pos' if label else 'neg'}/{fam:14} " + " | ".join(cols) + extra)
    fps = [(p[i], s.family, s.text) for i, s in enumerate(samples) if not s.label and comb_acts[i] != "allow"]
    print(f"\nnegatives flagged by the combination ({len(fps)}), highest model score first:")
    for q, fam, text in sorted(fps, reverse=True)[:25]:
        print(f"  {q:.3f} {fam:12} {text}")


def export(model: NgramModel, t_hold: float, t_block: float, path: Path = MODEL_PATH) -> None:
    meta: dict[str, Any] = {"trained_on": list(TRAIN_FILES), "data_sha256": data_digest(), "C": C,
                            "seed": SEED, "t_hold": t_hold, "t_block": t_block}
    doc = {"format": "ngram-logreg-1", "bias": model.bias, "meta": meta, "weights": model.weights}
    path.write_text(json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}: {len(model.weights)} weights, {path.stat().st_size / 1024:.0f} KiB")


def bench(rounds: int) -> None:
    """Time ``NgramModel.score`` per call over every training message, CPU and wall clocks."""
    model = NgramModel.load()
    texts = [s.text for s in load_samples()]
    for t in texts:  # warm the fold table
        model.score(t)
    cpu: list[int] = []
    wall: list[int] = []
    for _ in range(rounds):
        for t in texts:
            c0 = time.thread_time_ns()
            w0 = time.perf_counter_ns()
            model.score(t)
            w1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            cpu.append(c1 - c0)
            wall.append(w1 - w0)

    def q(xs: list[int], f: float) -> float:
        return sorted(xs)[int(f * (len(xs) - 1))] / 1000

    load = os.getloadavg()
    print(f"NgramModel.score: {len(texts)} messages × {rounds} rounds, "
          f"loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, xs in (("CPU", cpu), ("wall", wall)):
        print(f"  {name:4}  p50 {q(xs, 0.5):6.1f} µs   p90 {q(xs, 0.9):6.1f} µs   p99 {q(xs, 0.99):6.1f} µs   "
              f"mean {statistics.fmean(xs) / 1000:6.1f} µs")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", action="store_true", help="time the shipped model's score() and exit")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-export", action="store_true", help="do not write the weights file")
    ap.add_argument("--compare-c", action="store_true", help="print grouped-CV log loss for a few C values")
    args = ap.parse_args(argv)
    if args.bench:
        bench(args.rounds)
        return
    from live.community.guard import Guard

    samples = load_samples()
    y = np.asarray([s.label for s in samples])
    if args.compare_c:
        for c in (1.0, 2.0, 4.0, 8.0, 16.0):
            print(f"C={c}: out-of-fold log loss {log_loss(y, out_of_fold(samples, c)):.4f}")
        return
    guard = Guard()
    rules = [guard.verdict(s.text).action for s in samples]
    p = out_of_fold(samples)
    lfo = leave_family_out(samples, p)
    t_hold, t_block = choose_thresholds(samples, rules, p)
    report(samples, rules, p, lfo, t_hold, t_block)
    counts = Counter((s.source, s.label) for s in samples)
    print("\nrows per file:", {f"{k[0]}:{'pos' if k[1] else 'neg'}": v for k, v in sorted(counts.items())})
    if not args.no_export:
        export(fit([s.text for s in samples], [s.label for s in samples]), t_hold, t_block)


if __name__ == "__main__":
    main()
