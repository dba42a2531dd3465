"""Fixtures: a private Redis and database per test session (per xdist worker), the app per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import Api, RedisServer, RunningServer, TestDatabase, run_app, test_settings


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database() -> Iterator[TestDatabase]:
    db = TestDatabase()
    db.create()
    yield db
    db.drop()


@pytest.fixture
def settings_factory(redis_server: RedisServer, database: TestDatabase, tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(**overrides):  # type: ignore[no-untyped-def]
        redis_url = overrides.pop("redis_url", redis_server.url)
        database_url = overrides.pop("database_url", database.url())
        return test_settings(redis_url, database_url, tmp_path / "data", **overrides)

    return make


@pytest.fixture
async def server(settings_factory) -> AsyncIterator[RunningServer]:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory()) as srv:
        yield srv


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[Api]:
    async with Api(server.url) as a:
        yield a
