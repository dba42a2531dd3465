"""A Redis Cluster that is restarting is a backend away (UNAVAILABLE, retry), not a server bug
(INTERNAL). Found by the multi-host rig with ``--redis-cluster``: while its three masters
restarted, buys and joins answered INTERNAL and every background loop logged a traceback."""

from __future__ import annotations

import pytest
from redis.exceptions import ClusterDownError, MasterDownError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from live.core.errors import backend_unavailable


def cannot_connect() -> RedisClusterException:
    """What redis-py raises when no startup node answers (raised from the connection error)."""
    try:
        try:
            raise RedisConnectionError("Error 111 connecting to 10.77.0.2:6379. Connection refused.")
        except RedisConnectionError as e:
            raise RedisClusterException("Redis Cluster cannot be connected. Please provide at least one "
                                        f"reachable node: {e}") from e
    except RedisClusterException as outer:
        return outer


@pytest.mark.parametrize("exc", [ClusterDownError("The cluster is down"), MasterDownError("MASTERDOWN"),
                                 SlotNotCoveredError("slot 42 is not covered"), cannot_connect()],
                         ids=["clusterdown", "masterdown", "slot-not-covered", "cannot-connect"])
def test_a_cluster_away_is_unavailable(exc: BaseException) -> None:
    assert backend_unavailable(exc)


def test_a_cross_slot_mistake_stays_a_bug() -> None:
    # Raised by the client itself, from no connection error: a programming error, INTERNAL.
    assert not backend_unavailable(RedisClusterException("Keys in request don't hash to the same slot"))
