"""Ids and timestamps on the buy path."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime

from live.core.ids import RandomHex, iso, iso_ms


def test_iso_ms_writes_what_iso_writes() -> None:
    edge = [0, 999, 1000, 1_767_225_599_999, 1_767_225_600_000, 4_102_444_800_000]
    for ms in edge + [random.randint(0, 4_102_444_800_000) for _ in range(10_000)]:
        assert iso_ms(ms) == iso(datetime.fromtimestamp(ms / 1000, UTC)), ms


def test_random_hex_is_unique_refills_and_refetches_after_a_fork() -> None:
    r = RandomHex(chunk=16)  # 32 digits per fetch: refills every two 12-digit ids
    ids = [r.take(12) for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    before = r.take(12)
    r._pid = os.getpid() + 1  # as if this object had been copied into a forked child
    buf = r._buf
    r.take(12)
    assert r._buf != buf and r._pid == os.getpid() and before not in r._buf
