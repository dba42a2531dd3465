"""Redis clients: a bounded blocking pool (a buy storm waits for a connection instead of
failing at redis-py's default cap), or a Redis Cluster client."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from live.core.settings import Settings

Redis = aioredis.Redis | RedisCluster


def make_redis(url: str, settings: Settings, *, cluster: bool = False) -> Any:
    """A decoded-responses client for ``url``; the caller closes it with ``aclose()``."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True,
                                     max_connections=settings.redis_max_connections)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)
