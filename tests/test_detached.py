"""A websocket taken over from aiohttp (fast-path part ``detached``, docs/architecture.md "Taken
over from aiohttp"): the websocket protocol is still spoken in full (pings, the close handshake,
oversized messages refused), frames that must wait are served in order with buys between them,
and a shutdown closes these connections, which aiohttp no longer knows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from live.core.settings import Settings
from tests.flash_support import setup_sale
from tests.support import Api, RunningServer, run_app
from tests.test_socket_path import RawSocket, buy_frame

pytestmark = pytest.mark.timeout(60)
WS_PATH = "/socket.io/?EIO=4&transport=websocket"


async def open_raw(session: aiohttp.ClientSession, url: str, token: str) -> aiohttp.ClientWebSocketResponse:
    """A signed-in Socket.IO websocket that answers nothing by itself (no autoping)."""
    ws = await session.ws_connect(url.replace("http", "ws", 1) + WS_PATH, autoping=False)
    assert (await ws.receive_str()).startswith("0")
    await ws.send_str("40" + orjson.dumps({"token": token}).decode())
    assert (await ws.receive_str()).startswith("40")
    return ws


async def gone(server: RunningServer, taken: int) -> None:
    """Wait until the server forgot every Engine.IO socket it took over."""
    sio = server.services.pusher.sio
    assert sio.stats.detached_sessions > taken
    for _ in range(200):
        if not sio.live_direct_ws and not sio.eio.sockets:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still known: {list(sio.live_direct_ws)} / {list(sio.eio.sockets)}")


async def test_ping_pong_and_the_close_handshake(api: Api, server: RunningServer) -> None:
    sio = server.services.pusher.sio
    taken = sio.stats.detached_sessions
    async with aiohttp.ClientSession() as session:
        ws = await open_raw(session, server.url, (await api.guest())["token"])
        await ws.ping(b"are you there")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are you there"
        assert await ws.close()  # the client's close; the server answers with its own
        assert ws.close_code == aiohttp.WSCloseCode.OK
    await gone(server, taken)


async def test_an_oversized_message_is_refused_with_1009(api: Api, server: RunningServer) -> None:
    sio = server.services.pusher.sio
    taken = sio.stats.detached_sessions
    async with aiohttp.ClientSession() as session:
        ws = await open_raw(session, server.url, (await api.guest())["token"])
        await ws.send_str("42" + "x" * (sio.eio.max_http_buffer_size + 1))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await ws.close()
    await gone(server, taken)


async def test_frames_that_wait_are_served_in_order_with_buys_between(api: Api, server: RunningServer) -> None:
    """300 pipelined frames, most of which must wait for the one before (joins, refusals),
    buys between them: past 64 waiting the server stops reading, and every ack still comes once,
    in the order sent."""
    s, room, card = await setup_sale(api, stock=1000, limit_per_user=1000)
    join = orjson.dumps(["room:join", {"room_id": room["id"]}]).decode()
    frames = []
    for i in range(300):
        if i % 5 == 0:
            frames.append(buy_frame(i, card["id"]))
        elif i % 7 == 0:
            frames.append(f'42{i}["no:such:event",{{}}]')  # refused: INVALID, in its place
        else:
            frames.append(f"42{i}{join}")
    async with aiohttp.ClientSession() as session:
        sock = await RawSocket.open(session, server.url, (await api.guest())["token"])
        try:
            for f in frames:
                await sock.ws.send_str(f)
            acks = await sock.wait_acks(300, timeout=30)
            assert [i for i, _ in acks] == list(range(300))
            assert any(body[0]["ok"] for i, body in acks if i % 5 == 0)
            for i, body in acks:
                if i % 5 == 0:  # a buy: bought, or the per-user tap rate said slow down
                    assert body[0]["ok"] is True or body[0]["error"]["code"] == "RATE_LIMITED", body
                elif i % 7 == 0:
                    assert body[0]["error"]["code"] == "INVALID", body
                else:
                    assert body[0]["ok"] is True, body
        finally:
            await sock.close()


async def test_shutdown_closes_taken_over_websockets(settings_factory: Callable[..., Settings]) -> None:
    async with aiohttp.ClientSession() as session:
        async with run_app(settings_factory()) as srv, Api(srv.url) as api:
            sio = srv.services.pusher.sio
            s = await api.streamer()
            room = await api.live_room(s["token"])
            sock = await RawSocket.open(session, srv.url, (await api.guest())["token"])
            await sock.send(f'421["room:join",{{"room_id":"{room["id"]}"}}]')
            assert (await sock.wait_acks(1))[0][1][0]["ok"]
            assert sio.stats.detached_sessions >= 1
        # The app has shut down: the client was told (1001, going away), and the session ended
        # while the services were open (Engine.IO forgot the socket).
        async with asyncio.timeout(5):
            await sock.closed()
        assert sock.ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        assert not sio.live_direct_ws and not sio.eio.sockets


async def test_a_buy_whose_handler_breaks_gets_internal_and_the_line_moves_on(api: Api, server: RunningServer,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a task-less handler (raised inside ``data_received``) answers that tap INTERNAL;
    the acks after it are not stuck behind it."""
    s, room, card = await setup_sale(api, stock=10)
    sio = server.services.pusher.sio
    buy = sio.direct_events["flash:buy"]

    def broken(sid: str, args: list[object], reply: Callable[..., None]) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setitem(sio.now_handlers, buy, broken)
    async with aiohttp.ClientSession() as session:
        sock = await RawSocket.open(session, server.url, (await api.guest())["token"])
        try:
            await sock.send(buy_frame(1, card["id"]))
            await sock.send(f'422["room:join",{{"room_id":"{room["id"]}"}}]')
            acks = await sock.wait_acks(2)
            assert [i for i, _ in acks] == [1, 2]
            assert acks[0][1][0]["error"]["code"] == "INTERNAL" and acks[1][1][0]["ok"] is True
        finally:
            await sock.close()
