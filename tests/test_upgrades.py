"""A Socket.IO websocket upgrade is served past the HTTP middlewares (live.transport.upgrades):
a connection's session is not kept waiting inside the error, auth and security-headers
middlewares for its whole life; every other request, Socket.IO long-polling included, still
passes through them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from live.core.settings import Settings
from tests.support import Api, SioClient, run_app

pytestmark = pytest.mark.timeout(60)

MIDDLEWARES = {"security_headers", "error_middleware", "auth_middleware"}


def awaiting(task: asyncio.Task[object]) -> list[str]:
    """The names of the coroutines a task is suspended in, outermost first."""
    names: list[str] = []
    coro: object = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_name)
        coro = getattr(coro, "cr_await", None)
    return names


@pytest.mark.parametrize("detached", [True, False])
async def test_a_websocket_session_waits_in_no_http_middleware(settings_factory: Callable[..., Settings],
                                                                detached: bool) -> None:
    """Taken over from aiohttp (the default, fast-path part ``detached``), a session waits
    nowhere at all: no task of the request is left. Served on aiohttp's path (``detached`` off),
    its loop waits in Engine.IO's route handler, reached past the middlewares."""
    async with run_app(settings_factory()) as srv, Api(srv.url) as api:
        sio = srv.services.pusher.sio
        sio.fast.detached = detached
        taken = sio.stats.detached_sessions
        token = (await api.guest("upgrader"))["token"]
        client = SioClient()
        await client.connect(srv.url, token)
        try:
            await asyncio.sleep(0.1)
            tasks = [awaiting(t) for t in asyncio.all_tasks()]
            sessions = [s for s in tasks if "_session" in s]  # DirectWebSocket's session loop
            if detached:
                assert sio.stats.detached_sessions == taken + 1
                assert sessions == [] and not any("handle_request" in s for s in tasks), tasks
            else:
                assert sio.stats.detached_sessions == taken
                assert len(sessions) == 1
                assert "handle_request" in sessions[0]  # Engine.IO's route handler, reached directly
                assert not MIDDLEWARES & set(sessions[0])
            assert (await client.call("room:join", {"room_id": "nope"}))["ok"] is False  # still served
        finally:
            await client.close()


async def test_long_polling_still_passes_the_middlewares(settings_factory: Callable[..., Settings]) -> None:
    async with (run_app(settings_factory()) as srv, aiohttp.ClientSession() as http,
                http.get(srv.url + "/socket.io/?EIO=4&transport=polling") as r):
        assert r.status == 200 and (await r.text()).startswith("0")
        assert r.headers["X-Content-Type-Options"] == "nosniff"  # security_headers ran
