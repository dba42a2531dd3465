"""The lucky bag's verifiable draw: a pure function of the revealed seed and the entrants.

Anyone can rerun it (docs/fans.md has a standalone copy): the bag published
``commitment = SHA-256(seed bytes)`` when it opened, so the seed could not be chosen after the
entrants were known, and the winners follow from ``seed`` and the sorted entrants alone.

Procedure: sort the entrants (by their ids as strings); then a partial Fisher-Yates shuffle,
position ``i = 0 .. k-1`` swapping with ``i + r`` where ``r`` is uniform in ``[0, n - i)``. Each
``r`` comes from HMAC-SHA256(key=seed, msg="<i>:<attempt>"), the first 8 bytes big-endian,
redrawn (attempt + 1) while it falls in the last incomplete block of ``2**64`` (rejection
sampling), so that ``r`` is exactly uniform: no modulo bias.
"""

from __future__ import annotations

import hashlib
import hmac

_SPAN = 1 << 64


def commitment(seed_hex: str) -> str:
    """What a bag publishes when it opens: hex SHA-256 of the seed's bytes."""
    return hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()


def uniform_below(key: bytes, position: int, n: int) -> int:
    """An integer uniform in ``[0, n)`` from ``key`` for draw ``position`` (rejection sampling)."""
    limit = _SPAN - _SPAN % n  # largest multiple of n not above 2**64
    attempt = 0
    while True:
        digest = hmac.new(key, f"{position}:{attempt}".encode(), hashlib.sha256).digest()
        x = int.from_bytes(digest[:8], "big")
        if x < limit:
            return x % n
        attempt += 1


def draw_winners(seed_hex: str, entrants: list[str], k: int) -> list[str]:
    """The winners, in draw order: ``min(k, len(entrants))`` distinct entrants."""
    pool = sorted(set(entrants))
    key = bytes.fromhex(seed_hex)
    for i in range(min(k, len(pool))):
        j = i + uniform_below(key, i, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:min(k, len(pool))]
