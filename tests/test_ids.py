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


def test_random_hex_is_unique_refills_and_a_forked_child_refetches() -> None:
    r = RandomHex(chunk=16)  # 32 digits per fetch: refills every two 12-digit ids
    ids = [r.take(12) for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    # A forked child must not hand out the digits the parent hands out next.
    r = RandomHex()
    r.take(12)
    parents_next = r._buf[r._at:r._at + 12]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, r.take(12).encode())
        os._exit(0)
    os.close(write)
    childs = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(childs) == 12 and childs != parents_next
    assert r.take(12) == parents_next
