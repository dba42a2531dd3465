"""The Redis client packs commands with hiredis (live.core.redisconn): the same bytes as
redis-py's own packer, the same refusals, and on a real Redis the same answers."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from live.core.redisconn import PackedConnection, PackedUnixConnection, make_redis
from live.core.settings import Settings


def test_packs_the_bytes_redis_py_packs() -> None:
    ours, theirs = PackedConnection(), aioredis.Connection()
    rng = random.Random(7)
    samples: list[tuple[Any, ...]] = [
        ("EVALSHA", "a" * 40, 2, "k1", "k2", 1764191234567, "user-1", 2, "é中文", b"\x00\xff", 0.1, -0.0, 10**20),
        ("CONFIG GET", "maxmemory"),  # several words in the command name
        ("SET", "k", memoryview(b"view")),
        *[("HSET", "h", *[rng.choice([rng.random() * 10 ** rng.randint(-9, 18), rng.randint(-10**12, 10**12),
                                      str(rng.random()), bytes(rng.randrange(256) for _ in range(8))])
                          for _ in range(rng.randint(1, 40))]) for _ in range(300)],
    ]
    for cmd in samples:
        assert b"".join(ours.pack_command(*cmd)) == b"".join(theirs.pack_command(*cmd)), cmd


@pytest.mark.parametrize("bad", [True, None, object()])
def test_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises(DataError):
        PackedConnection().pack_command("SET", "k", bad)


async def test_a_real_redis_answers_through_the_packed_client(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    r = make_redis(settings.redis_url, settings)
    try:
        assert r.connection_pool.connection_class in (PackedConnection, PackedUnixConnection)
        await r.hset("live:test:packed", mapping={"a": "é中文", "b": 1.5, "c": 10**18})
        assert await r.hgetall("live:test:packed") == {"a": "é中文", "b": "1.5", "c": str(10**18)}
        assert await r.eval("return ARGV[1] .. ARGV[2]", 0, "x", 7) == "x7"
    finally:
        await r.delete("live:test:packed")
        await r.aclose()


def test_hiredis_does_the_packing(monkeypatch: pytest.MonkeyPatch) -> None:
    import live.core.redisconn as rc

    packed: list[tuple[Any, ...]] = []
    real = rc.hiredis.pack_command

    def counting(args: tuple[Any, ...]) -> bytes:
        packed.append(args)
        return real(args)

    monkeypatch.setattr(rc.hiredis, "pack_command", counting)
    PackedConnection().pack_command("EVALSHA", "a" * 40, 0, "x")
    assert packed == [("EVALSHA", "a" * 40, 0, "x")]
