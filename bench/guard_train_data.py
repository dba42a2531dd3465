"""Expand the hand-written training templates into tests/data/guard_train_2026-11c.tsv.

    python -m bench.guard_train_data > tests/data/guard_train_2026-11c.tsv

Every sentence is written by hand in ``bench/data/guard_train_templates.txt``; this script only
fills the slots (phone numbers, bank cards, handles, ids, tracking and order numbers, prices,
share codes) with seeded random values, so the output is reproducible. A template with slots is
written ``FILLS`` times with different values; one without slots once. Rows that come from one
template share a group when the model is cross-validated (``bench.guard_train.group_key``).
"""

from __future__ import annotations

import random
import re
import string
import sys
from collections.abc import Callable
from pathlib import Path

TEMPLATES = Path(__file__).parent / "data" / "guard_train_templates.txt"
FILLS = 3
SEED = 2611

_MOBILE_PREFIXES = ["130", "131", "132", "135", "136", "138", "139", "150", "151", "152", "157",
                    "158", "159", "166", "176", "177", "180", "181", "186", "187", "189", "199"]
_SYLLABLES = ["mei", "xiao", "ling", "yu", "tang", "lily", "kiki", "shop", "hao", "huo", "bao",
              "amy", "jie", "ge", "vip", "sun", "star", "mini", "coco", "lulu", "ah", "hua"]


def _mobile(rng: random.Random) -> str:
    digits = rng.choice(_MOBILE_PREFIXES) + "".join(rng.choice(string.digits) for _ in range(8))
    style = rng.randrange(4)
    if style == 0:
        return digits
    if style == 1:
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    if style == 2:
        return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
    return f"+86 {digits}"


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    prefix = rng.choice(["62", "62", "4", "52", "55"])
    length = rng.choice([16, 19]) if prefix == "62" else 16
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + _luhn_digit(body)
    if rng.random() < 0.5:
        return " ".join(number[i:i + 4] for i in range(0, len(number), 4))
    return number


def _handle(rng: random.Random) -> str:
    name = rng.choice(_SYLLABLES) + rng.choice(["", "_", ""]) + rng.choice(_SYLLABLES)
    return name + str(rng.randrange(10, 9999))


def _qq(rng: random.Random) -> str:
    return str(rng.randrange(1, 10)) + "".join(rng.choice(string.digits) for _ in range(rng.randrange(5, 10)))


def _tracking(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return "SF" + "".join(rng.choice(string.digits) for _ in range(13))
    if kind == 1:
        return "YT" + "".join(rng.choice(string.digits) for _ in range(13))
    if kind == 2:
        return "JT" + "".join(rng.choice(string.digits) for _ in range(13))
    return "7" + "".join(rng.choice(string.digits) for _ in range(13))


def _order(rng: random.Random) -> str:
    return str(rng.randrange(1, 10)) + "".join(rng.choice(string.digits) for _ in range(rng.randrange(15, 19)))


def _small(rng: random.Random) -> str:
    return str(rng.choice([rng.randrange(1, 60), rng.randrange(60, 400)]))


def _day(rng: random.Random) -> str:
    return str(rng.randrange(1, 29))


def _share(rng: random.Random) -> str:
    body = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(11))
    sign = rng.choice(["￥", "¥", "$", "€"])
    return f"{sign}{body}{sign}"


SLOTS: dict[str, Callable[[random.Random], str]] = {
    "P": _mobile, "C": _card, "I": _handle, "Q": _qq, "T": _tracking, "O": _order, "N": _small,
    "S": _share, "D": _day,
}
_SLOT = re.compile(r"\{([A-Z])\}")


def expand(path: Path = TEMPLATES, seed: int = SEED) -> list[tuple[str, str, str, int]]:
    """``(label, family, text, template number)`` rows from the template file, slots filled
    reproducibly; the template number is the CV group."""
    rng = random.Random(seed)
    rows: list[tuple[str, str, str, int]] = []
    label = family = ""
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("## "):
            label, family = line[3:].split()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        fills = FILLS if _SLOT.search(line) else 1
        template = lineno
        for _ in range(fills):
            rows.append((label, family, _SLOT.sub(lambda m: SLOTS[m.group(1)](rng), line), template))
    return rows


def main() -> None:
    out = sys.stdout
    out.write("# label\tfamily\ttext — training set for the guard's n-gram model (issue 17). Sentences written\n")
    out.write("# by hand (bench/data/guard_train_templates.txt), slots filled by bench/guard_train_data.py.\n")
    for label, family, text, _ in expand():
        out.write(f"{label}\t{family}\t{text}\n")


if __name__ == "__main__":
    main()
