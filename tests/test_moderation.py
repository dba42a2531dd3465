"""Moderation with real clients: mute, ban (kick + no re-join), delete, slow-mode rights,
penalties that hold on every process, reports and their resolution, the audit log, stats."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from live.core.models import ModerationAction
from tests.support import Api, RunningServer, run_app
from tests.test_chat import PRIVATE, Room, eventually, room, send

__all__ = ["room"]  # the fixture, shared with test_chat


async def test_streamer_mutes_and_others_may_not(room: Room, api: Api) -> None:
    alice, alice_user = await room.viewer("alice")
    bob, bob_user = await room.viewer("bob")
    alice_id = alice_user["user"]["id"]
    other = await api.streamer()
    for token in (bob_user["token"], other["token"]):
        status, body = await api.post(f"/api/rooms/{room.id}/mute", json={"user_id": alice_id, "seconds": 60},
                                      token=token)
        assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    assert (await send(alice, room.id, "still here"))["ok"]
    status, body = await api.post(f"/api/rooms/{room.id}/mute", json={"user_id": room.streamer["user"]["id"],
                                                                      "seconds": 60}, token=room.streamer["token"])
    assert status == 403  # nobody mutes the host in their own room
    res = await api.ok("POST", f"/api/rooms/{room.id}/mute", json={"user_id": alice_id, "seconds": 60},
                       token=room.streamer["token"])
    assert res["muted"] is True
    ack = await send(alice, room.id, "hello?")
    assert ack["ok"] is False and ack["error"]["code"] == "MUTED" and ack["error"]["until"] == res["until"]
    assert (await send(bob, room.id, "bob is fine"))["ok"]
    await api.ok("POST", f"/api/rooms/{room.id}/mute", json={"user_id": alice_id, "seconds": 0},
                 token=room.streamer["token"])
    assert (await send(alice, room.id, "back"))["ok"]


async def test_bad_moderation_bodies_are_invalid(room: Room, api: Api) -> None:
    token = room.streamer["token"]
    for path, payload in [("mute", {"user_id": "x"}), ("mute", {"user_id": "x", "seconds": "60"}),
                          ("mute", {"user_id": "x", "seconds": -1}), ("ban", {"user_id": None}),
                          ("ban", [1]), ("slowmode", {"seconds": 1.5}), ("slowmode", {"seconds": 99999})]:
        status, body = await api.post(f"/api/rooms/{room.id}/{path}", json=payload, token=token)
        assert status == 400 and body["error"]["code"] == "INVALID", (path, payload, body)
    status, body = await api.post(f"/api/rooms/{room.id}/ban", json={"user_id": "nobody"}, token=token)
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


async def test_ban_kicks_out_and_blocks_rejoin(room: Room, api: Api) -> None:
    alice, alice_user = await room.viewer("alice")
    alice_id = alice_user["user"]["id"]
    await api.ok("POST", f"/api/rooms/{room.id}/ban", json={"user_id": alice_id}, token=room.streamer["token"])
    assert await alice.wait_for("room:kicked") == {"room_id": room.id}
    ack = await send(alice, room.id, "let me in")
    assert ack["ok"] is False and ack["error"]["code"] == "FORBIDDEN"
    rejoin = await alice.call("room:join", {"room_id": room.id})
    assert rejoin["ok"] is False and rejoin["error"]["code"] == "FORBIDDEN"
    assert alice.sio.connected
    state = await api.ok("GET", f"/api/rooms/{room.id}/moderation", token=room.streamer["token"])
    assert state["banned"] == [alice_id]
    await api.ok("POST", f"/api/rooms/{room.id}/unban", json={"user_id": alice_id}, token=room.streamer["token"])
    assert (await alice.call("room:join", {"room_id": room.id}))["ok"] is True
    assert (await send(alice, room.id, "sorry"))["ok"]


async def test_penalties_hold_on_every_process(settings_factory: Any) -> None:
    settings = settings_factory()
    async with run_app(settings) as a, run_app(settings) as b, Api(a.url) as api_a, Api(b.url) as api_b:
        room = await Room(a, api_a).open()
        try:
            carol_user = await api_b.guest("carol")
            carol, _ = await room.join(carol_user["token"], url=b.url)  # on process B
            watcher, _ = await room.join((await api_b.guest("watcher"))["token"], url=a.url)  # on process A
            carol_id = carol_user["user"]["id"]
            hello = await send(carol, room.id, "hello from B")
            assert (await watcher.wait_for("chat:message"))["id"] == hello["message"]["id"]  # fan-out across

            # A room mute applied through A refuses carol on B.
            await api_a.ok("POST", f"/api/rooms/{room.id}/mute", json={"user_id": carol_id, "seconds": 30},
                           token=room.streamer["token"])
            assert (await send(carol, room.id, "muted?"))["error"]["code"] == "MUTED"
            await api_a.ok("POST", f"/api/rooms/{room.id}/mute", json={"user_id": carol_id, "seconds": 0},
                           token=room.streamer["token"])
            assert (await send(carol, room.id, "free again"))["ok"]

            # Violations earned on A mute dave on B.
            dave_user = await api_a.guest("dave")
            dave_a, _ = await room.join(dave_user["token"], url=a.url)
            assert (await send(dave_a, room.id, PRIVATE))["error"]["penalty"] == "warn"
            assert (await send(dave_a, room.id, PRIVATE))["error"]["penalty"] == "mute:300"
            dave_b, _ = await room.join(dave_user["token"], url=b.url)
            assert (await send(dave_b, room.id, "clean words"))["error"]["code"] == "MUTED"

            # A ban through A kicks carol's connection on B and refuses her re-join there.
            await api_a.ok("POST", f"/api/rooms/{room.id}/ban", json={"user_id": carol_id},
                           token=room.streamer["token"])
            await carol.wait_for("room:kicked")
            assert (await carol.call("room:join", {"room_id": room.id}))["error"]["code"] == "FORBIDDEN"
            assert (await send(carol, room.id, "hi"))["error"]["code"] == "FORBIDDEN"
        finally:
            await room.close()


async def test_delete_pushes_and_removes_from_history(room: Room, api: Api) -> None:
    alice, _ = await room.viewer("alice")
    bob, bob_user = await room.viewer("bob")
    keep = (await send(alice, room.id, "keep me"))["message"]
    gone = (await send(alice, room.id, "delete me"))["message"]
    status, body = await api.delete(f"/api/messages/{gone['id']}", token=bob_user["token"])
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    status, body = await api.delete("/api/messages/no-such-message", token=room.streamer["token"])
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    await api.ok("DELETE", f"/api/messages/{gone['id']}", token=room.streamer["token"])
    assert (await bob.wait_for("chat:deleted"))["id"] == gone["id"]
    _, late = await room.join((await api.guest())["token"])
    assert [m["id"] for m in late["chat"]] == [keep["id"]]


async def test_reports_queue_resolve_audit_and_stats(room: Room, api: Api, server: RunningServer) -> None:
    admin = server.settings.admin_token
    alice, alice_user = await room.viewer("alice")
    _bob, bob_user = await room.viewer("bob")
    rude = (await send(alice, room.id, "rude words"))["message"]
    assert (await send(alice, room.id, PRIVATE))["error"]["code"] == "BLOCKED"

    status, rep = await api.post("/api/reports", json={"target": "message", "target_id": rude["id"],
                                                       "reason": "rude"}, token=bob_user["token"])
    assert status == 201 and rep["status"] == "open" and rep["reporter_id"] == bob_user["user"]["id"]
    status, rep_room = await api.post("/api/reports", json={"target": "room", "target_id": room.id,
                                                            "reason": "fake goods"}, token=bob_user["token"])
    assert status == 201
    for payload, code in [({"target": "message", "target_id": "nope", "reason": "x"}, 404),
                          ({"target": "planet", "target_id": room.id, "reason": "x"}, 400),
                          ({"target": "room", "target_id": room.id, "reason": "   "}, 400),
                          ({"target": "room", "target_id": room.id}, 400)]:
        status, _ = await api.post("/api/reports", json=payload, token=bob_user["token"])
        assert status == code, payload
    status, _ = await api.post("/api/reports", json={"target": "room", "target_id": room.id, "reason": "x"})
    assert status == 401

    status, body = await api.get("/api/reports?status=open", token=bob_user["token"])
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    queue = await api.ok("GET", "/api/reports?status=open", token=admin)
    mine = {rep["id"], rep_room["id"]}
    assert [r["id"] for r in queue if r["id"] in mine] == [rep["id"], rep_room["id"]]  # oldest first

    resolved = await api.ok("POST", f"/api/reports/{rep['id']}/resolve", json={"action": "ban"}, token=admin)
    assert resolved["report"]["status"] == "resolved" and resolved["report"]["resolution"] == "ban"
    await alice.wait_for("room:kicked")
    status, body = await api.post(f"/api/reports/{rep['id']}/resolve", json={"action": "dismiss"}, token=admin)
    assert status == 409 and body["error"]["code"] == "CONFLICT"
    status, body = await api.post(f"/api/reports/{rep_room['id']}/resolve", json={"action": "delete"}, token=admin)
    assert status == 400  # only messages can be deleted
    await api.ok("POST", f"/api/reports/{rep_room['id']}/resolve", json={"action": "dismiss"}, token=admin)
    assert not mine & {r["id"] for r in await api.ok("GET", "/api/reports?status=open", token=admin)}
    assert {r["id"] for r in await api.ok("GET", "/api/reports?status=resolved", token=admin)} >= {
        rep["id"], rep_room["id"]}
    status, _ = await api.get("/api/reports?status=weird", token=admin)
    assert status == 400

    status, _ = await api.get("/api/moderation/actions", token=room.streamer["token"])
    assert status == 403
    log = await api.ok("GET", f"/api/moderation/actions?room_id={room.id}", token=admin)
    assert [(a["action"], a["target_user_id"]) for a in log] == [("ban", alice_user["user"]["id"])]
    everything = await api.ok("GET", "/api/moderation/actions", token=admin)
    assert [a["action"] for a in everything[:2]] == ["resolve", "resolve"]
    assert all(a["actor_id"] == "admin" for a in everything[:3])

    async def violation_landed() -> dict[str, Any] | None:
        st = await api.ok("GET", "/api/moderation/stats", token=admin)
        return st if st["violations"]["total"] >= 1 else None

    stats = await eventually(violation_landed)
    assert stats["blocked"]["by_reason"]["private_trading"] >= 1
    assert stats["violations"]["by_reason"]["private_trading"] >= 1 and stats["penalties"]["warn"] >= 1
    open_now = await api.ok("GET", "/api/reports?status=open&limit=500", token=admin)
    assert stats["reports"]["resolved"] >= 2 and stats["reports"]["open"] == len(open_now)
    assert stats["actions"]["resolve"] >= 2 and stats["actions"]["ban"] >= 1


async def test_resolving_with_delete_and_a_promoted_moderator(room: Room, api: Api, server: RunningServer) -> None:
    alice, _ = await room.viewer("alice")
    bob, _ = await room.viewer("bob")
    mod_user = await api.guest("mod")
    msg = (await send(alice, room.id, "spam spam"))["message"]
    rep = await api.ok("POST", "/api/reports", json={"target": "message", "target_id": msg["id"], "reason": "spam"},
                       token=mod_user["token"])
    status, _ = await api.post(f"/api/reports/{rep['id']}/resolve", json={"action": "delete"},
                               token=mod_user["token"])
    assert status == 403
    await api.ok("POST", f"/api/users/{mod_user['user']['id']}/role", json={"role": "moderator"},
                 token=server.settings.admin_token)
    # The old token still says "viewer"; the promotion in the database is what counts.
    await api.ok("POST", f"/api/reports/{rep['id']}/resolve", json={"action": "delete"}, token=mod_user["token"])
    assert (await bob.wait_for("chat:deleted"))["id"] == msg["id"]
    await api.ok("POST", f"/api/rooms/{room.id}/slowmode", json={"seconds": 5}, token=mod_user["token"])
    async with server.services.db() as s:
        acts = list((await s.execute(select(ModerationAction.action)
                                     .where(ModerationAction.actor_id == mod_user["user"]["id"]))).scalars())
    assert sorted(acts) == ["delete", "resolve", "slowmode"]


async def test_unauthenticated_moderation_is_refused(room: Room, api: Api) -> None:
    for path in ("mute", "ban", "unban", "slowmode"):
        status, body = await api.post(f"/api/rooms/{room.id}/{path}", json={"user_id": "x", "seconds": 1})
        assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    for path in ("/api/reports", "/api/moderation/actions", "/api/moderation/stats"):
        status, body = await api.get(path)
        assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"


async def test_a_report_is_resolved_once(room: Room, api: Api, server: RunningServer) -> None:
    admin = server.settings.admin_token
    host, _ = await room.join(room.streamer["token"])
    viewer = await api.guest("v")
    mine = (await send(host, room.id, "今晚 8 点开抢"))["message"]
    rep = await api.ok("POST", "/api/reports", json={"target": "message", "target_id": mine["id"], "reason": "x"},
                       token=viewer["token"])
    # Banning the host from their own room is refused, and the report stays in the queue.
    status, body = await api.post(f"/api/reports/{rep['id']}/resolve", json={"action": "ban"}, token=admin)
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    assert rep["id"] in [r["id"] for r in await api.ok("GET", "/api/reports", token=admin)]
    results = await asyncio.gather(*[api.post(f"/api/reports/{rep['id']}/resolve", json={"action": "dismiss"},
                                              token=admin) for _ in range(4)])
    assert sorted(status for status, _ in results) == [200, 409, 409, 409]
    log = await api.ok("GET", "/api/moderation/actions", token=admin)
    assert [a["action"] for a in log if a["target_id"] == rep["id"]] == ["resolve"]
