"""Identity and rooms over HTTP and Socket.IO, against a real Redis and database."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
import socketio

from tests.support import (
    Api,
    RedisServer,
    RunningServer,
    SioClient,
    TestDatabase,
    free_port,
    run_app,
    spawn_server,
    stop_server,
    wait_healthy,
)


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


# --- rooms end by themselves --------------------------------------------------------------
IDLE_S = 2.0


async def _status(api: Api, room_id: str) -> str:
    return str((await api.ok("GET", f"/api/rooms/{room_id}"))["status"])


async def test_room_whose_publisher_vanished_ends_within_grace_and_pushes_status(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.media_support import publish

    async with run_app(settings_factory(room_idle_end_s=IDLE_S)) as server, Api(server.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"], "闪购")
        publisher = await publish(api, room["id"], s["token"])
        studio, viewer = SioClient(), SioClient()
        try:
            await studio.connect(server.url, s["token"])
            assert (await studio.call("room:join", {"room_id": room["id"]}))["ok"]
            v = await api.guest()
            await viewer.connect(server.url, v["token"])
            assert (await viewer.call("room:join", {"room_id": room["id"]}))["ok"]
            media = server.services.media
            await _until(lambda: room["id"] in media.publishing_rooms(), 10)
            # Hosted for twice the grace: still live.
            await asyncio.sleep(2 * IDLE_S)
            assert await _status(api, room["id"]) == "live" and not viewer.received("room:status")
            # The publisher and the studio vanish (no DELETE, no /end).
            await publisher.close()
            await studio.close()
            await _until(lambda: room["id"] not in media.publishing_rooms(), 30)
            gone = time.monotonic()
            assert await viewer.wait_for("room:status", timeout=IDLE_S + 4) == {"room_id": room["id"],
                                                                                  "status": "ended"}
            assert time.monotonic() - gone <= IDLE_S + 4
            assert await _status(api, room["id"]) == "ended"
            assert room["id"] not in [r["id"] for r in await api.ok("GET", "/api/rooms")]
            await asyncio.sleep(IDLE_S)
            assert len(viewer.received("room:status")) == 1  # ended once
        finally:
            await publisher.close()
            await studio.close()
            await viewer.close()


async def test_racing_idle_sweeps_end_a_room_once(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(room_idle_end_s=60)) as server, Api(server.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        viewer = SioClient()
        try:
            v = await api.guest()
            await viewer.connect(server.url, v["token"])
            assert (await viewer.call("room:join", {"room_id": room["id"]}))["ok"]
            rooms = server.services.rooms
            rooms.idle_end_s = 0.001  # every live room here is idle now
            await asyncio.sleep(0.01)
            results = await asyncio.gather(*(rooms.end_idle() for _ in range(8)))
            assert sum(r.count(room["id"]) for r in results) == 1
            await viewer.wait_for("room:status")
            await asyncio.sleep(0.5)
            assert viewer.received("room:status") == [{"room_id": room["id"], "status": "ended"}]
            # The streamer's own /end afterwards is a conflict and pushes nothing more.
            status, body = await api.post(f"/api/rooms/{room['id']}/end", token=s["token"])
            assert status == 409 and body["error"]["code"] == "CONFLICT"
        finally:
            await viewer.close()


async def test_restart_ends_live_rooms_nobody_hosts(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(room_idle_end_s=120)
    async with run_app(settings) as server, Api(server.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        studio = SioClient()
        await studio.connect(server.url, s["token"])
        assert (await studio.call("room:join", {"room_id": room["id"]}))["ok"]
        await _until(lambda: room["id"] in server.services.presence.hosted_rooms(), 5)
        await server.services.rooms.mark_hosts()
        await studio.close()
    # A new run: the old process left cleanly and nobody hosts the room (the studio's entry went
    # with its process): it ends at start-up, not a grace period (two minutes) later.
    async with run_app(settings) as server, Api(server.url) as api:
        await _until_async(lambda: _status(api, room["id"]), "ended", 5)


async def test_me_rooms_lists_the_live_room_to_resume(api: Api) -> None:
    s = await api.streamer()
    other = await api.streamer()
    room = await api.live_room(s["token"], "续播")
    await api.ok("POST", "/api/rooms", json={"title": "later"}, token=s["token"])
    live = await api.ok("GET", "/api/me/rooms?status=live", token=s["token"])
    assert [r["id"] for r in live] == [room["id"]] and live[0]["status"] == "live"
    assert len(await api.ok("GET", "/api/me/rooms", token=s["token"])) == 2
    assert await api.ok("GET", "/api/me/rooms?status=live", token=other["token"]) == []
    status, body = await api.get("/api/me/rooms?status=bogus", token=s["token"])
    assert status == 400 and body["error"]["code"] == "INVALID"
    status, body = await api.get("/api/me/rooms")
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"


async def _until(cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _until_async(get, want: object, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (got := await get()) != want:
        assert time.monotonic() < deadline, f"still {got!r}, wanted {want!r}"
        await asyncio.sleep(0.1)


async def test_two_processes_racing_end_an_unhosted_room_once(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """Two servers on one Redis and database (as two processes are): both idle loops see the
    room unhosted at about the same moment; the room ends once and its viewers hear it once."""
    settings = settings_factory(room_idle_end_s=1.0)
    async with run_app(settings) as a, run_app(settings) as b, Api(a.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        viewers = [SioClient(), SioClient()]
        try:
            for c, srv in zip(viewers, (a, b), strict=True):
                v = await api.guest()
                await c.connect(srv.url, v["token"])
                assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
            for c in viewers:
                assert await c.wait_for("room:status", timeout=8) == {"room_id": room["id"], "status": "ended"}
            await asyncio.sleep(1.5)  # both loops have had more passes
            assert [len(c.received("room:status")) for c in viewers] == [1, 1]
        finally:
            for c in viewers:
                await c.close()


async def test_what_a_dead_process_hosted_does_not_keep_a_room_live(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from live.core import keys
    from live.core.ids import now_ms

    async with run_app(settings_factory(room_idle_end_s=120)) as server, Api(server.url) as api:
        s = await api.streamer()
        kept = await api.live_room(s["token"])
        orphan = await api.live_room(s["token"])
        svc = server.services
        # Both were hosted a moment ago: one by this (registered) process, one by a process that
        # was killed and has been reaped from the registry.
        await svc.redis.zadd(keys.room_hosts(kept["id"]), {svc.presence.proc_id: now_ms()})
        await svc.redis.zadd(keys.room_hosts(orphan["id"]), {"killed-proc": now_ms()})
        for room in (kept, orphan):
            await svc.redis.zrem(keys.room_hosts(room["id"]), "live")  # hosted: the go-live entry is gone
        ended = await svc.rooms.end_idle()
        assert orphan["id"] in ended and kept["id"] not in ended
        assert await _status(api, orphan["id"]) == "ended" and await _status(api, kept["id"]) == "live"


@pytest.mark.slow
async def test_room_hosted_by_a_killed_process_ends_and_other_processes_viewers_hear_it(
        redis_server: RedisServer, database: TestDatabase) -> None:
    """The studio's process is killed (kill -9): another process ends the room within the grace
    period and its viewers receive room:status once."""
    import signal
    import tempfile

    idle = 3.0
    env = {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(),
           "LIVE_DATA_DIR": tempfile.mkdtemp(prefix="live-idle-"), "LIVE_SECRET": "idle-rooms-secret-" + "q" * 20,
           "LIVE_HEARTBEAT_INTERVAL_S": "0.5", "LIVE_HEARTBEAT_DEAD_AFTER_S": "2", "LIVE_ROOM_IDLE_END_S": str(idle)}
    ports = [free_port(), free_port()]
    procs = [spawn_server(p, env) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    studio, viewer = SioClient(), SioClient()
    try:
        await asyncio.gather(*[wait_healthy(u, 60) for u in urls])
        async with Api(urls[1]) as api:
            s = await api.streamer()
            room = await api.live_room(s["token"])
            await studio.connect(urls[0], s["token"])
            assert (await studio.call("room:join", {"room_id": room["id"]}))["ok"]
            v = await api.guest()
            await viewer.connect(urls[1], v["token"])
            assert (await viewer.call("room:join", {"room_id": room["id"]}))["ok"]
            await asyncio.sleep(2 * idle)  # hosted by process A: stays live
            assert await _status(api, room["id"]) == "live"
            procs[0].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert await viewer.wait_for("room:status", timeout=idle + 5) == {"room_id": room["id"],
                                                                                "status": "ended"}
            assert time.monotonic() - killed <= idle + 5
            await asyncio.sleep(1.5)
            assert len(viewer.received("room:status")) == 1
            assert await _status(api, room["id"]) == "ended"
    finally:
        await studio.close()
        await viewer.close()
        for p in procs:
            stop_server(p)
