"""Chat over real Socket.IO clients against a real Redis and database: the send path, history,
the private-trading guard with escalating penalties, rate limits, slow mode, the SQL log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select

from live.core import keys
from live.core.errors import Blocked, Forbidden
from live.core.models import ChatMessage, Violation
from tests.support import Api, RunningServer, SioClient, run_app

PRIVATE = "加我微信 abc12345 私聊发货"  # steering a buyer off the platform


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy (the persister works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(0.05)


class Room:
    """A live room with clients that joined it; closes them at the end."""

    def __init__(self, server: RunningServer, api: Api) -> None:
        self.server = server
        self.api = api
        self.clients: list[SioClient] = []
        self.id = ""
        self.streamer: dict[str, Any] = {}

    async def open(self) -> Room:
        self.streamer = await self.api.streamer()
        self.id = (await self.api.live_room(self.streamer["token"]))["id"]
        return self

    async def join(self, token: str, url: str | None = None) -> tuple[SioClient, dict[str, Any]]:
        c = SioClient()
        self.clients.append(c)
        await c.connect(url or self.server.url, token)
        ack = await c.call("room:join", {"room_id": self.id})
        assert ack["ok"] is True, ack
        return c, ack

    async def viewer(self, name: str = "viewer") -> tuple[SioClient, dict[str, Any]]:
        user = await self.api.guest(name)
        c, _ = await self.join(user["token"])
        return c, user

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


@pytest.fixture
async def room(server: RunningServer, api: Api) -> AsyncIterator[Room]:
    r = await Room(server, api).open()
    yield r
    await r.close()


async def send(c: SioClient, room_id: str, text: Any) -> Any:
    return await c.call("chat:send", {"room_id": room_id, "text": text})


async def test_message_reaches_every_client_in_the_room(room: Room) -> None:
    alice, alice_user = await room.viewer("alice")
    bob, _ = await room.viewer("bob")
    ack = await send(alice, room.id, "  这件  多少钱?\n  XL 有吗  ")
    assert ack["ok"] is True, ack
    msg = ack["message"]
    assert msg["text"] == "这件 多少钱? XL 有吗"  # normalised: one space between words, trimmed
    assert msg["room_id"] == room.id and msg["id"]
    assert msg["user"] == alice_user["user"]
    assert msg["ts"].endswith("Z") and "T" in msg["ts"]
    assert await bob.wait_for("chat:message") == msg
    assert await alice.wait_for("chat:message") == msg


async def test_join_ack_carries_the_recent_history(settings_factory: Any) -> None:
    async with run_app(settings_factory(chat_history=3)) as server, Api(server.url) as api:
        room = await Room(server, api).open()
        try:
            alice, _ = await room.viewer("alice")
            texts = [f"第{i}条 size 42" for i in range(4)]
            for t in texts:
                assert (await send(alice, room.id, t))["ok"]
            _, ack = await room.join((await api.guest("late"))["token"])
            assert [m["text"] for m in ack["chat"]] == texts[1:]  # oldest first, only the last 3
        finally:
            await room.close()


async def test_private_trading_is_blocked_and_not_pushed(room: Room, server: RunningServer) -> None:
    alice, _ = await room.viewer("alice")
    bob, _ = await room.viewer("bob")
    ack = await send(alice, room.id, PRIVATE)
    assert ack["ok"] is False
    err = ack["error"]
    assert err["code"] == "BLOCKED" and err["reason"] == "private_trading"
    assert err["penalty"] == "warn" and err["violations"] == 1
    # A clean message goes through after the warning; it is the only one bob ever sees.
    ok = await send(alice, room.id, "99 元包邮吗")
    assert ok["ok"] is True
    assert await bob.wait_for("chat:message") == ok["message"]
    assert [m["text"] for m in bob.received("chat:message")] == ["99 元包邮吗"]
    _, late = await room.join((await room.api.guest())["token"])
    assert [m["text"] for m in late["chat"]] == ["99 元包邮吗"]


async def test_second_violation_mutes_and_violations_are_recorded(room: Room, server: RunningServer) -> None:
    alice, user = await room.viewer("alice")
    first = await send(alice, room.id, PRIVATE)
    assert first["error"]["penalty"] == "warn"
    second = await send(alice, room.id, "V我 13812345678 便宜")
    assert second["error"]["code"] == "BLOCKED" and second["error"]["penalty"] == "mute:300"
    assert second["error"]["until"].endswith("Z")
    muted = await send(alice, room.id, "好看")
    assert muted["ok"] is False and muted["error"]["code"] == "MUTED"
    assert muted["error"]["until"] == second["error"]["until"]

    async def rows() -> list[Violation]:
        async with server.services.db() as s:
            return list((await s.execute(select(Violation).where(Violation.user_id == user["user"]["id"])
                                         .order_by(Violation.created_at))).scalars())

    recorded = await eventually(lambda: _at_least(rows, 2))
    assert [(v.kind, v.reason, v.penalty, v.room_id) for v in recorded] == [
        ("chat", "private_trading", "warn", room.id), ("chat", "private_trading", "mute:300", room.id)]
    assert recorded[0].text == PRIVATE


async def _at_least(rows: Callable[[], Awaitable[list[Any]]], n: int) -> list[Any] | None:
    got = await rows()
    return got if len(got) >= n else None


async def test_token_bucket_limits_a_fast_sender(settings_factory: Any) -> None:
    async with run_app(settings_factory(chat_rate_burst=3, chat_rate_per_s=0.2)) as server, Api(server.url) as api:
        room = await Room(server, api).open()
        try:
            alice, _ = await room.viewer("alice")
            acks = [await send(alice, room.id, f"hi {i}") for i in range(4)]
            assert [a["ok"] for a in acks] == [True, True, True, False]
            assert acks[3]["error"]["code"] == "RATE_LIMITED"
        finally:
            await room.close()


async def test_slow_mode(room: Room, api: Api) -> None:
    alice, alice_user = await room.viewer("alice")
    other = await api.streamer()
    for token in (alice_user["token"], other["token"]):
        status, body = await api.post(f"/api/rooms/{room.id}/slowmode", json={"seconds": 2}, token=token)
        assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    await api.ok("POST", f"/api/rooms/{room.id}/slowmode", json={"seconds": 2}, token=room.streamer["token"])
    assert (await send(alice, room.id, "one"))["ok"]
    slow = await send(alice, room.id, "two")
    assert slow["ok"] is False and slow["error"]["code"] == "RATE_LIMITED"
    assert 0 < slow["error"]["retry_after"] <= 2
    # The streamer talks freely in their own room.
    host, _ = await room.join(room.streamer["token"])
    assert [(await send(host, room.id, f"欢迎 {i}"))["ok"] for i in range(3)] == [True] * 3
    await api.ok("POST", f"/api/rooms/{room.id}/slowmode", json={"seconds": 0}, token=room.streamer["token"])
    assert (await send(alice, room.id, "three"))["ok"]


async def test_chat_log_lands_in_sql(room: Room, server: RunningServer, api: Api) -> None:
    alice, _ = await room.viewer("alice")
    msg = (await send(alice, room.id, "记录 in SQL"))["message"]

    async def row() -> ChatMessage | None:
        async with server.services.db() as s:
            return await s.get(ChatMessage, msg["id"])

    saved = await eventually(row)
    assert (saved.room_id, saved.user_id, saved.user_name, saved.text, saved.deleted) == (
        room.id, msg["user"]["id"], "alice", "记录 in SQL", False)
    await api.ok("DELETE", f"/api/messages/{msg['id']}", token=room.streamer["token"])

    async def deleted() -> bool:
        r = await row()
        return bool(r and r.deleted)

    await eventually(deleted)


async def test_bad_payloads_are_invalid_and_keep_the_connection(room: Room, api: Api) -> None:
    alice, _ = await room.viewer("alice")
    bob, _ = await room.viewer("bob")
    elsewhere = await room.api.live_room((await api.streamer())["token"])
    bad: list[Any] = [
        None, 5, "hello", [], {}, [room.id, "hi"],
        {"room_id": room.id}, {"room_id": room.id, "text": None}, {"room_id": room.id, "text": 42},
        {"room_id": room.id, "text": ["hi"]}, {"room_id": room.id, "text": {"t": "hi"}},
        {"room_id": room.id, "text": ""}, {"room_id": room.id, "text": "  \n\t "},
        {"room_id": room.id, "text": "\u202e\u0000"},
        {"room_id": room.id, "text": "x" * 201}, {"room_id": room.id, "text": "长" * 20000},
        {"room_id": None, "text": "hi"}, {"room_id": 7, "text": "hi"}, {"room_id": "r" * 1000, "text": "hi"},
        {"room_id": "no-such-room", "text": "hi"}, {"room_id": elsewhere["id"], "text": "not joined"},
    ]
    for payload in bad:
        ack = await alice.call("chat:send", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "INVALID", (payload, ack)
        assert alice.sio.connected
    ok = await send(alice, room.id, "x" * 200)  # exactly the limit is fine
    assert ok["ok"] is True
    assert [m["id"] for m in [await bob.wait_for("chat:message")]] == [ok["message"]["id"]]
    assert len(bob.received("chat:message")) == 1


async def test_names_and_titles_are_guarded(api: Api, server: RunningServer) -> None:
    status, body = await api.post("/api/auth/guest", json={"name": "加V 13812345678"})
    assert status == 422 and body["error"]["code"] == "BLOCKED" and body["error"]["reason"] == "private_trading"
    s = await api.streamer()
    status, body = await api.post("/api/rooms", json={"title": "清仓 私聊 vx lovely88"}, token=s["token"])
    assert status == 422 and body["error"]["code"] == "BLOCKED"
    assert (await api.guest("微微"))["user"]["name"] == "微微"  # a clean name that looks like 微信
    stats = await api.ok("GET", "/api/moderation/stats", token=server.settings.admin_token)
    assert stats["blocked"]["by_reason"].get("private_trading", 0) >= 2


async def test_penalty_ladder_comes_from_settings(settings_factory: Any) -> None:
    ladder = ["mute:3600", "mute:60", "chat_ban", "listing_ban"]
    async with run_app(settings_factory(penalties=ladder)) as server, Api(server.url) as api:
        room = await Room(server, api).open()
        try:
            alice, user = await room.viewer("alice")
            who = server.services.auth.verify(user["token"])
            first = await send(alice, room.id, PRIVATE)
            assert first["error"]["penalty"] == "mute:3600"
            # A lighter mute earned meanwhile (here from a card title) does not shorten it.
            with pytest.raises(Blocked) as second:
                await server.services.chat.vet(who, "加微信 abc12345", kind="card", room_id=room.id)
            assert second.value.extra["penalty"] == "mute:60"
            assert second.value.extra["until"] == first["error"]["until"]
            with pytest.raises(Blocked):
                await server.services.chat.vet(who, "加微信 abc12345", kind="card")
            banned = await send(alice, room.id, "clean")
            assert banned["error"]["code"] == "FORBIDDEN"  # chat_ban outranks the mute
            await server.services.moderation.check_can_list(user["user"]["id"])  # not yet
            with pytest.raises(Blocked):
                await server.services.chat.vet(who, "加微信 abc12345", kind="card")
            with pytest.raises(Forbidden):
                await server.services.moderation.check_can_list(user["user"]["id"])
        finally:
            await room.close()


async def test_an_ended_room_lets_its_history_expire(room: Room, api: Api, redis_server: Any) -> None:
    alice, _ = await room.viewer("alice")
    assert (await send(alice, room.id, "bye"))["ok"]
    r = redis_server.client()
    key = keys.room_chat(room.id)
    assert r.ttl(key) == -1  # kept while live
    await api.ok("POST", f"/api/rooms/{room.id}/end", token=room.streamer["token"])
    assert 0 < r.ttl(key) <= 3600
    r.close()
