"""Authorisation from the current role, not the token's: a demotion takes effect within seconds
on every process (here a second, separate server process on the same Redis and SQL), and a
signed token of a user that does not exist is refused and creates nothing."""

from __future__ import annotations

import asyncio
import tempfile
import time

import jwt
import pytest
import socketio

from tests.flash_support import rid, setup_sale
from tests.support import Api, RunningServer, SioClient, free_port, spawn_server, stop_server, wait_healthy

pytestmark = pytest.mark.timeout(120)
ADMIN = "test-admin-token"


async def _ban(api: Api, token: str, room_id: str, user_id: str) -> tuple[int, str]:
    status, body = await api.post(f"/api/rooms/{room_id}/ban", json={"user_id": user_id}, token=token)
    return status, (body.get("error") or {}).get("code", "OK") if isinstance(body, dict) else "?"


async def test_a_demoted_moderator_can_no_longer_ban_on_any_process(api: Api, server: RunningServer) -> None:
    settings = server.settings
    port = free_port()
    other = spawn_server(port, {"LIVE_REDIS_URL": settings.redis_url, "LIVE_DATABASE_URL": settings.database_url,
                                "LIVE_DATA_DIR": tempfile.mkdtemp(prefix="live-authz-"),
                                "LIVE_SECRET": settings.secret, "LIVE_ADMIN_TOKEN": ADMIN,
                                "LIVE_SOCKETIO_REDIS_MANAGER": "on"})
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", 60)
        s = await api.streamer()
        room = await api.live_room(s["token"])
        reg = await api.ok("POST", "/api/auth/register", json={"username": "mod_demo", "password": "mod-password"})
        mod_id = reg["user"]["id"]
        await api.ok("POST", f"/api/users/{mod_id}/role", json={"role": "moderator"}, token=ADMIN)
        token = (await api.ok("POST", "/api/auth/refresh", token=reg["token"]))["token"]  # says "moderator"
        targets = [(await api.guest(f"t{i}"))["user"]["id"] for i in range(4)]
        # Someone else's order, which a moderator may read (the token's role alone decided this).
        _, _, card = await setup_sale(api, stock=2)
        buyer = await api.guest("buyer")
        order = (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                              token=buyer["token"]))["order"]
        async with Api(f"http://127.0.0.1:{port}") as api_b:
            # A moderator bans on both processes (each has cached the role).
            assert await _ban(api, token, room["id"], targets[0]) == (200, "OK")
            assert await _ban(api_b, token, room["id"], targets[1]) == (200, "OK")
            assert (await api_b.get(f"/api/orders/{order['id']}", token=token))[0] == 200
            viewer = SioClient()  # a socket of the moderator on process B
            await viewer.connect(f"http://127.0.0.1:{port}", token)
            await api.ok("POST", f"/api/users/{mod_id}/role", json={"role": "viewer"}, token=ADMIN)
            t0 = time.monotonic()
            # The same token, still signed "moderator", is refused on both within seconds.
            codes: tuple[tuple[int, str], ...] = ()
            while time.monotonic() - t0 < 10:
                codes = (await _ban(api, token, room["id"], targets[2]),
                         await _ban(api_b, token, room["id"], targets[3]))
                if codes == ((403, "FORBIDDEN"), (403, "FORBIDDEN")):
                    break
                await asyncio.sleep(0.2)
            took = time.monotonic() - t0
            assert codes == ((403, "FORBIDDEN"), (403, "FORBIDDEN")), codes
            assert took < 3 * settings.role_cache_s + 1, took
            # Moderator-only reads are refused too, and /api/me tells the current role.
            status, _ = await api_b.get("/api/moderation/stats", token=token)
            assert status == 403
            status, _ = await api_b.get(f"/api/orders/{order['id']}", token=token)
            assert status in (403, 404)
            assert (await api_b.ok("GET", "/api/me", token=token))["user"]["role"] == "viewer"
            await viewer.close()
        # The two later targets were never banned.
        state = await api.ok("GET", f"/api/rooms/{room['id']}/moderation", token=s["token"])
        banned = {b["user_id"] if isinstance(b, dict) else b for b in state.get("banned", [])}
        assert targets[2] not in banned and targets[3] not in banned
    finally:
        stop_server(other)


async def test_a_token_of_a_user_that_does_not_exist_creates_nothing(api: Api, server: RunningServer) -> None:
    now = int(time.time())
    ghost = jwt.encode({"sub": "ghost0000000000000000001", "name": "ghost", "role": "streamer", "iat": now,
                        "exp": now + 600}, server.settings.secret, algorithm="HS256")
    before = await api.ok("GET", "/api/rooms")
    status, body = await api.post("/api/rooms", json={"title": "haunted"}, token=ghost)
    assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED"), body
    status, body = await api.post("/api/auth/refresh", token=ghost)
    assert status == 401
    assert await api.ok("GET", "/api/rooms") == before
    from sqlalchemy import func, select

    from live.core.models import Room

    async with server.services.db() as s:
        assert (await s.execute(select(func.count()).select_from(Room).where(
            Room.streamer_id == "ghost0000000000000000001"))).scalar_one() == 0
    # Its socket is refused at connect.
    c = SioClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(server.url, ghost)
    await c.close()
