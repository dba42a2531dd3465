"""A character n-gram classifier for private trading: one learned signal next to the guard's rules.

The model is a logistic regression over binary features of a lightly normalised text (character
1-3-grams and the lengths of digit runs), trained by ``bench/guard_train.py`` and shipped as
``guard_model.json`` next to this module. Inference is pure Python: one dictionary lookup per
feature and a sigmoid, no scikit-learn at run time.

    model = NgramModel.load()                     # once at start-up, share it
    p = model.score("加我威芯 abc123")             # probability that the message steers off-platform
    action = combine(guard.verdict(text), p)      # "block" | "hold" | "allow"

The model never decides alone below ``T_BLOCK``: see ``combine`` and docs/guard_model.md.
"""

from __future__ import annotations

import json
import math
import operator
import re
import unicodedata
from importlib import resources
from itertools import repeat
from typing import Literal, Protocol

Action = Literal["block", "hold", "allow"]

# Thresholds chosen on out-of-fold predictions (bench/guard_train.py, docs/guard_model.md).
T_HOLD = 0.92
T_BLOCK = 0.99

MODEL_FILE = "guard_model.json"
NGRAM_MAX = 3  # features() builds the 1-, 2- and 3-grams explicitly: change both together

_DIGIT = "0"
# Digit-run lengths (digits joined across spaces, dots and dashes) bucketed: a price, a year,
# a short id, a QQ number, a mobile, a tracking number, a bank card.
_RUN_BUCKETS = ((1, 2), (3, 4), (5, 6), (7, 10), (11, 11), (12, 15), (16, 19), (20, 20))
_BUCKET_OF = ["", *(f"#run{lo}" for lo, hi in _RUN_BUCKETS for _ in range(lo, hi + 1))]
_RUN = re.compile(r"[0-9](?:[ .\-]?[0-9])*")
_NO_SEPARATORS = str.maketrans("", "", " .-")


class _Fold(dict[int, str]):
    """``str.translate`` table filled on first sight of each character (after NFKC, lower case):
    every digit form → its ASCII digit, combining marks (tone marks, variation selectors) dropped, accented
    Latin letters → their base letter, every kind of space → one space."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        out = ch
        if ch.isspace():
            out = " "
        elif unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            out = ""
        elif unicodedata.decimal(ch, None) is not None:
            out = str(unicodedata.decimal(ch))
        elif unicodedata.digit(ch, None) is not None:
            out = str(unicodedata.digit(ch))
        elif not ch.isascii() and ch.isalpha():
            base = unicodedata.normalize("NFD", ch)[0]
            if base.isascii():
                out = base.lower()
        self[code] = out
        return out


def normalise(text: str, table: _Fold | None = None) -> str:
    """The text the model reads: NFKC, lower case, folded as ``_Fold`` says, spaces collapsed.
    Digits stay digits here; ``features`` reads their runs, then sees every digit as ``0``."""
    folded = unicodedata.normalize("NFKC", text).lower().translate(table if table is not None else _Fold())
    return " ".join(folded.split())


def _luhn(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _run_features(norm: str) -> list[str]:
    """One feature per digit run, by length bucket (runs continue across one `` .-``), and
    ``#luhn`` for a 13-19 digit run that passes the bank-card check (order numbers mostly do not)."""
    out: list[str] = []
    for m in _RUN.finditer(norm):
        digits = m.group().translate(_NO_SEPARATORS)
        run = len(digits)
        out.append(_BUCKET_OF[run] if run < len(_BUCKET_OF) else _BUCKET_OF[-1])
        if 13 <= run <= 19 and _luhn(digits):
            out.append("#luhn")
    return out


_TO_DIGIT_CLASS = str.maketrans("0123456789", _DIGIT * 10)


def features(norm: str) -> set[str]:
    """The binary features of a normalised text: character 1-3-grams (with ``^``/``$`` at the
    ends) and digit-run lengths."""
    padded = f"^{norm.translate(_TO_DIGIT_CLASS)}$"
    # The 1-, 2- and 3-grams by C-level maps over shifted copies (the same set as slicing at every
    # offset, about twice as fast: chat pays for this on every message).
    two = list(map(operator.add, padded, padded[1:]))
    feats = set(padded)
    feats.update(two)
    feats.update(map(operator.add, two, padded[2:]))
    if _RUN.search(norm):
        feats.update(_run_features(norm))
    return feats


class NgramModel:
    """A trained model: a bias and one weight per feature (features not listed weigh 0)."""

    __slots__ = ("_table", "bias", "meta", "weights")

    def __init__(self, bias: float, weights: dict[str, float], meta: dict[str, object] | None = None) -> None:
        self.bias = bias
        self.weights = weights
        self.meta = meta or {}
        self._table = _Fold()

    @classmethod
    def load(cls) -> NgramModel:
        """The model shipped with the package (``live/community/guard_model.json``)."""
        raw = resources.files(__package__ or "live.community").joinpath(MODEL_FILE).read_bytes()
        return cls.from_json(raw)

    @classmethod
    def from_json(cls, raw: bytes | str) -> NgramModel:
        data = json.loads(raw)
        if data.get("format") != "ngram-logreg-1":
            raise ValueError(f"unknown guard model format {data.get('format')!r}")
        return cls(float(data["bias"]), {str(k): float(v) for k, v in data["weights"].items()},
                   dict(data.get("meta", {})))

    def logit(self, text: str) -> float:
        """The model's log-odds for ``text``."""
        feats = features(normalise(text, self._table))
        return self.bias + sum(map(self.weights.get, feats, repeat(0.0, len(feats))))

    def score(self, text: str) -> float:
        """The probability (0..1) that ``text`` steers a buyer off the platform."""
        z = self.logit(text)
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


class RuleResult(Protocol):
    """What ``combine`` needs of the rules' answer (``live.community.guard.Verdict``)."""

    @property
    def action(self) -> str: ...


def combine(rule_result: RuleResult, p: float, t_hold: float = T_HOLD, t_block: float = T_BLOCK) -> Action:
    """Join the rules' verdict with the model's probability ``p``.

    A rules block stays a block; the model alone blocks only at ``p ≥ t_block``; the rules'
    hold or ``p ≥ t_hold`` holds for review; everything else is allowed. The model can only make
    the guard stricter, never let through what the rules stopped.
    """
    if rule_result.action == "block" or p >= t_block:
        return "block"
    if rule_result.action == "hold" or p >= t_hold:
        return "hold"
    return "allow"
