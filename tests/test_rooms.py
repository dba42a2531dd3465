"""Identity and rooms over HTTP and Socket.IO, against a real Redis and database."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
import socketio

from tests.support import Api, RunningServer, SioClient


async def test_healthz_and_metrics(api: Api) -> None:
    health = await api.ok("GET", "/healthz")
    assert health["status"] == "ok" and health["event_loop"] == "asyncio"  # pytest's loop
    assert all(health["fast_path"].values())  # tests/test_socket_path.py checks each part
    status, body = await api.get("/metrics")
    assert status == 200 and b"live_socket_connections" in body


async def test_guest_register_login(api: Api) -> None:
    g = await api.guest("小明")
    assert g["user"]["role"] == "viewer" and g["user"]["name"] == "小明" and g["token"]
    status, reg = await api.post("/api/auth/register", json={"username": "alice_1", "password": "s3cret-pass",
                                                            "role": "streamer"})
    assert status == 201 and reg["user"]["role"] == "streamer"
    login = await api.ok("POST", "/api/auth/login", json={"username": "alice_1", "password": "s3cret-pass"})
    assert login["user"] == reg["user"]
    status, bad = await api.post("/api/auth/login", json={"username": "alice_1", "password": "wrong-pass"})
    assert status == 401 and bad["error"]["code"] == "UNAUTHORIZED"
    status, dup = await api.post("/api/auth/register", json={"username": "alice_1", "password": "other-pass1"})
    assert status == 409 and dup["error"]["code"] == "CONFLICT"


async def test_password_is_hashed_with_argon2(api: Api, server: RunningServer) -> None:
    await api.ok("POST", "/api/auth/register", json={"username": "hashme", "password": "plain-text-pw"})
    from sqlalchemy import select

    from live.core.models import User

    async with server.services.db() as s:
        user = (await s.execute(select(User).where(User.username == "hashme"))).scalar_one()
    assert user.password_hash and user.password_hash.startswith("$argon2id$")
    assert "plain-text-pw" not in user.password_hash


@pytest.mark.parametrize("payload", [b"{not json", b"[1,2]", b'{"name": 5}', b'{"name": ""}', b'{"name": null}',
                                     b'{"name": "' + b"x" * 500 + b'"}'])
async def test_bad_input_is_invalid(api: Api, payload: bytes) -> None:
    status, body = await api.post("/api/auth/guest", data=payload, headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]["code"] == "INVALID"


async def test_room_lifecycle_and_permissions(api: Api) -> None:
    s1 = await api.streamer()
    s2 = await api.streamer()
    viewer = await api.guest()
    status, body = await api.post("/api/rooms", json={"title": "nope"}, token=viewer["token"])
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    status, body = await api.post("/api/rooms", json={"title": "x"})
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    status, room = await api.post("/api/rooms", json={"title": "新品首发"}, token=s1["token"])
    assert status == 201 and room["status"] == "scheduled" and room["streamer"]["id"] == s1["user"]["id"]
    assert room["cards"] == [] and room["pinned_card_id"] is None and room["viewers"] == 0
    assert room["id"] not in [r["id"] for r in await api.ok("GET", "/api/rooms")]
    await api.ok("POST", f"/api/rooms/{room['id']}/live", token=s1["token"])
    assert room["id"] in [r["id"] for r in await api.ok("GET", "/api/rooms")]
    status, body = await api.post(f"/api/rooms/{room['id']}/end", token=s2["token"])
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["status"] == "live"
    await api.ok("POST", f"/api/rooms/{room['id']}/end", token=s1["token"])
    assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["status"] == "ended"
    status, body = await api.get("/api/rooms/does-not-exist")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


async def test_join_snapshot_and_status_push(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"], "直播间")
    v = await api.guest()
    c = SioClient()
    await c.connect(server.url, v["token"])
    try:
        ack = await c.call("room:join", {"room_id": room["id"]})
        assert ack["ok"] is True
        assert ack["room"]["id"] == room["id"] and ack["room"]["status"] == "live"
        assert ack["room"]["viewers"] == 1 and ack["chat"] == []
        await api.ok("POST", f"/api/rooms/{room['id']}/end", token=s["token"])
        assert await c.wait_for("room:status") == {"room_id": room["id"], "status": "ended"}
    finally:
        await c.close()


async def _refused(server: RunningServer, token: str | None) -> None:
    c = SioClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(server.url, token)
    await c.close()


async def test_bad_tokens_refused_at_connect(server: RunningServer, api: Api) -> None:
    await _refused(server, None)
    await _refused(server, "garbage")
    forged = jwt.encode({"sub": "x", "name": "x", "role": "streamer", "exp": int(time.time()) + 60},
                        "not-the-secret", algorithm="HS256")
    await _refused(server, forged)
    expired = jwt.encode({"sub": "x", "name": "x", "role": "viewer", "exp": int(time.time()) - 10},
                         server.settings.secret, algorithm="HS256")
    await _refused(server, expired)


@pytest.mark.parametrize("payload", [None, 5, "room", [], {}, {"room_id": None}, {"room_id": 12},
                                     {"room_id": "x" * 1000}, {"room_id": "no-such-room"}])
async def test_bad_join_payloads_are_invalid_and_keep_connection(server: RunningServer, api: Api,
                                                                 payload: object) -> None:
    v = await api.guest()
    c = SioClient()
    await c.connect(server.url, v["token"])
    try:
        ack = await c.call("room:join", payload)
        assert ack["ok"] is False and ack["error"]["code"] in ("INVALID", "NOT_FOUND")
        assert c.sio.connected
        s = await api.streamer()
        room = await api.live_room(s["token"])
        assert (await c.call("room:join", {"room_id": room["id"]}))["ok"] is True
    finally:
        await c.close()


async def test_viewer_counts_distinct_users_and_coalesced_pushes(server: RunningServer, api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    alice = await api.guest("alice")
    bob = await api.guest("bob")
    clients = [SioClient() for _ in range(4)]
    try:
        # alice opens three tabs, bob one: two viewers
        for c, who in zip(clients, [alice, alice, alice, bob], strict=True):
            await c.connect(server.url, who["token"])
            assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        await clients[0].call("room:join", {"room_id": room["id"]})  # joining twice counts once
        assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 2
        update = await clients[3].wait_for("room:viewers", timeout=5, where=lambda d: d["viewers"] == 2)
        assert update["room_id"] == room["id"]
        await clients[3].close()
        await asyncio.sleep(0.3)
        assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 1
        await clients[0].wait_for("room:viewers", timeout=5, where=lambda d: d["viewers"] == 1)
        pushes = clients[0].received("room:viewers")
        assert len(pushes) <= 4, pushes  # coalesced: not one push per join
        _, text = await api.get("/metrics")
        assert b"live_rooms_with_viewers 1.0" in text and b"live_socket_connections 3.0" in text
    finally:
        for c in clients:
            await c.close()


async def test_streamer_is_not_counted_as_a_viewer(server: RunningServer, api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    studio = SioClient()
    await studio.connect(server.url, s["token"])
    try:
        ack = await studio.call("room:join", {"room_id": room["id"]})
        assert ack["ok"] and ack["room"]["viewers"] == 0
        assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 0
    finally:
        await studio.close()
