"""``bench.capacity`` drives the real scripts through a real order life, and says so when it did not:
a capacity figure of calls that failed would be the cost of an error path. (No timing asserted:
speed is measured by the bench itself.)"""

from __future__ import annotations

import time

import pytest

from bench import capacity
from live.core import keys


def test_resp_is_the_redis_protocol() -> None:
    assert capacity.resp("EVALSHA", "ab", 1, "k") == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"


def test_every_phase_takes_every_order_to_its_status() -> None:
    out = capacity.run(orders=120, batches=[1, 16], aof=False)
    phases = out["phases"]
    assert set(phases) == {"buy_batch_1", "buy_batch_16", "buy_sold_out_batch_16", "after_pay", "after_ship",
                           "after_confirm", "release_cancel", "after_sales_companions"}
    assert phases["buy_batch_1"]["calls"] == 120
    assert phases["buy_batch_16"]["calls"] == 8  # 7 full calls of 16 and one of 8
    assert phases["after_sales_companions"]["calls"] == 120 * 6
    assert all(p["ops"] == 120 for p in phases.values())
    assert phases["buy_batch_1"]["redis_bytes_per_order"] > 0


def test_a_phase_short_of_its_status_fails_the_run() -> None:
    r = capacity.PrivateRedis(aof=False)
    try:
        card = "cap-test"
        capacity.put_card(r, card)
        sha = r.client.script_load(capacity.source("buy"))
        now = int(time.time() * 1000)
        for call in capacity.buy_calls(sha, card, capacity.order_ids(card, 5), 5, now):
            r.client.execute_command(*_args(call))
        capacity.expect(r, card, "pending_payment", 5, "buy")
        with pytest.raises(RuntimeError, match="expected 5 orders paid"):
            capacity.expect(r, card, "paid", 5, "after_pay")
        assert r.client.hlen(keys.card_orders(card)) == 5
    finally:
        r.close()


def _args(command: bytes) -> list[str]:
    """The arguments of one RESP command (the inverse of ``capacity.resp``)."""
    lines = command.split(b"\r\n")
    return [lines[i].decode() for i in range(2, len(lines) - 1, 2)]
