"""The short path for Socket.IO events (live/transport/fanout.py) answers exactly like
python-socketio's own: on websocket, on long-polling, after an upgrade, pipelined, and for frames
it must leave to python-socketio (no ack id); malformed frames with an ack id get INVALID.
And the fast path is on, not silently off: every part is enabled and each one actually ran."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from live.core.settings import Settings
from tests.flash_support import rid, setup_sale
from tests.support import Api, RunningServer, SioClient, run_app

pytestmark = pytest.mark.timeout(60)


class RawSocket:
    """A bare Engine.IO v4 / Socket.IO v5 websocket client: frames in, frames out, nothing hidden."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.acks: list[tuple[int, Any]] = []  # in arrival order
        self.events: list[tuple[str, Any]] = []
        self._got_ack = asyncio.Event()
        self.answer_pings = True
        self.pings = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str, token: str) -> RawSocket:
        ws = await session.ws_connect(url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket")
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40" + orjson.dumps({"token": token}).decode())
        assert (await ws.receive_str()).startswith("40")
        return cls(ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            data = msg.data
            if data == "2":
                self.pings += 1
                if self.answer_pings:
                    await self.ws.send_str("3")
            elif data.startswith("43"):
                i = 2
                while data[i].isdigit():
                    i += 1
                self.acks.append((int(data[2:i]), orjson.loads(data[i:])))
                self._got_ack.set()
            elif data.startswith("42"):
                name, *rest = orjson.loads(data[2:])
                self.events.append((name, rest[0] if rest else None))

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def wait_acks(self, n: int, timeout: float = 10) -> list[tuple[int, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.acks) < n:
                self._got_ack.clear()
                await self._got_ack.wait()
        return self.acks

    async def closed(self) -> None:
        """Return once the connection has ended."""
        await asyncio.shield(self._reader)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def buy_frame(ack_id: int, card_id: str, request_id: str | None = None) -> str:
    payload = {"card_id": card_id, "qty": 1, "request_id": request_id or rid()}
    return f"42{ack_id}" + orjson.dumps(["flash:buy", payload]).decode()


async def test_pipelined_taps_are_each_answered_once_and_in_order(api: Api, server: RunningServer) -> None:
    _, _, card = await setup_sale(api, stock=8, limit_per_user=5)
    viewer = await api.guest()
    async with aiohttp.ClientSession() as session:
        sock = await RawSocket.open(session, server.url, viewer["token"])
        try:
            # Eight taps sent back to back without waiting: five orders, then the limit.
            for i in range(8):
                await sock.send(buy_frame(100 + i, card["id"]))
            acks = await sock.wait_acks(8)
            assert [i for i, _ in acks] == list(range(100, 108))
            bodies = [a[0] for _, a in acks]
            assert [b["ok"] for b in bodies] == [True] * 5 + [False] * 3
            assert {b["error"]["code"] for b in bodies[5:]} == {"LIMIT_EXCEEDED"}
            assert len({b["order"]["id"] for b in bodies[:5]}) == 5
            assert [b["left"] for b in bodies[:5]] == [7, 6, 5, 4, 3]
            await asyncio.sleep(0.2)
            assert len(sock.acks) == 8  # nothing answered twice
        finally:
            await sock.close()
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 3


async def test_taps_beyond_the_in_flight_bound_wait_and_an_ordered_event_waits_for_them(
        settings_factory: Callable[..., Settings]) -> None:
    # Buys of one connection run side by side, at most socket_inflight_per_connection; past it
    # reading waits. Every tap is still answered once and in order, and an event that is not
    # concurrent (room:join) is served only after the buys sent before it.
    settings = settings_factory(socket_inflight_per_connection=3)
    async with run_app(settings) as srv, Api(srv.url) as api, aiohttp.ClientSession() as session:
        _, room, card = await setup_sale(api, stock=6, limit_per_user=10)
        sock = await RawSocket.open(session, srv.url, (await api.guest())["token"])
        try:
            for i in range(10):
                await sock.send(buy_frame(100 + i, card["id"]))
            await sock.send(f'42200["room:join",{{"room_id":"{room["id"]}"}}]')
            acks = await sock.wait_acks(11)
            assert [i for i, _ in acks] == [*range(100, 110), 200]
            bodies = [a[0] for _, a in acks]
            assert [b["ok"] for b in bodies[:10]] == [True] * 6 + [False] * 4
            assert [b["left"] for b in bodies[:6]] == [5, 4, 3, 2, 1, 0]
            assert {b["error"]["code"] for b in bodies[6:10]} == {"SOLD_OUT"}
            assert bodies[10]["ok"]
            await asyncio.sleep(0.2)
            assert len(sock.acks) == 11  # nothing answered twice
        finally:
            await sock.close()


async def test_frames_the_short_path_does_not_take_still_work_and_bad_ones_change_nothing(
        api: Api, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    s, room, card = await setup_sale(api, stock=5)
    viewer = await api.guest()
    async with aiohttp.ClientSession() as session:
        sock = await RawSocket.open(session, server.url, viewer["token"])
        try:
            await sock.send('421["flash:buy",{"card_id":')            # not JSON: INVALID
            await sock.send('422["no:such:event",{}]')                 # unknown event: INVALID
            await sock.send('423["flash:buy","not an object"]')        # short path: INVALID
            await sock.send('424["flash:buy"]')                        # no payload: INVALID
            await sock.send('425["flash:buy",{"card_id":"x"},{"y":1}]')  # two payloads: INVALID
            await sock.send('42["room:join",{"room_id":"' + room["id"] + '"}]')  # no ack id: still served
            await sock.send(buy_frame(6, card["id"]))
            await sock.send('4[]')                                     # not an event at all: ignored
            await sock.send('42["flash:buy",{"card_id":')              # bad JSON, no ack id: ignored
            acks = await sock.wait_acks(6)
            await asyncio.sleep(0.2)
            assert [i for i, _ in sock.acks] == [1, 2, 3, 4, 5, 6]
            assert [a[0]["error"]["code"] for _, a in acks[:5]] == ["INVALID"] * 5
            assert "unknown event" in acks[1][1][0]["error"]["message"]
            assert acks[5][1][0]["ok"] is True
            assert not sock.ws.closed  # refused frames never end the connection
            # One short line per refused frame (the two malformed ones with an ack id, and the two
            # python-socketio's decoder refused), and no traceback.
            refused = [r for r in caplog.records if "frame refused" in r.getMessage()]
            assert len(refused) == 4, [r.getMessage() for r in refused]
            assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
            assert all(len(r.getMessage()) < 300 for r in refused)
            # The join without an ack id took effect: the room counts this viewer.
            assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 1
        finally:
            await sock.close()
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 4  # only the one good tap


@pytest.mark.parametrize("transports", [("polling",), ("polling", "websocket")], ids=["polling", "upgrade"])
async def test_long_polling_and_upgraded_clients_get_the_same_acks(
        api: Api, server: RunningServer, transports: tuple[str, ...]) -> None:
    _, _, card = await setup_sale(api, stock=3)
    viewer = await api.guest()
    c = SioClient()
    await c.connect(server.url, viewer["token"], transports=transports)
    try:
        request_id = rid()
        first = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": request_id})
        again = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": request_id})
        assert first["ok"] and again == first  # a retry gets the same order
        bad = await c.call("flash:buy", {"card_id": card["id"], "qty": 0, "request_id": rid()})
        assert bad["ok"] is False and bad["error"]["code"] == "INVALID"
        assert c.sio.transport() == transports[-1]
        # Hang up from the server: a long-polling client's own disconnect waits for its pending
        # GET to time out (python-engineio), which only slows the test down.
        await server.services.pusher.sio.disconnect(c.sio.get_sid())
    finally:
        await c.close()
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 2


async def test_a_client_that_goes_silent_is_dropped_and_leaves_the_count(
        settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(socket_ping_interval_s=0.5, socket_ping_timeout_s=0.5)
    async with run_app(settings) as srv, Api(srv.url) as api, aiohttp.ClientSession() as session:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        talker = await RawSocket.open(session, srv.url, (await api.guest())["token"])
        quiet = await RawSocket.open(session, srv.url, (await api.guest())["token"])
        try:
            for i, sock in enumerate((talker, quiet)):
                await sock.send(f'42{i}["room:join",{{"room_id":"{room["id"]}"}}]')
                assert (await sock.wait_acks(1))[0][1][0]["ok"]
            assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 2
            quiet.answer_pings = False  # the network drops it: no pong, nothing else
            async with asyncio.timeout(10):
                await quiet.closed()  # the server hung up
            for _ in range(50):
                if (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 1:
                    break
                await asyncio.sleep(0.1)
            assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["viewers"] == 1
            # The one answering pings over the same seconds is still connected and served.
            pings = talker.pings
            await asyncio.sleep(1.5)
            assert not talker.ws.closed
            assert talker.pings >= pings + 2  # pinged every 0.5 s
            # ... by the server's one pinger: no task per connection sleeps until its next ping.
            sio = srv.services.pusher.sio
            assert sio.pinger is not None
            for _ in range(100):  # between a PING and its PONG the talker waits in no deque
                if len(sio.pinger) >= 1:
                    break
                await asyncio.sleep(0.01)
            assert len(sio.pinger) >= 1
            assert not [t for t in asyncio.all_tasks() if "_send_ping" in repr(t.get_coro())]
            await talker.send(buy_frame(7, "no-such-card"))
            acks = await talker.wait_acks(2)
            assert acks[1][0] == 7 and acks[1][1][0]["error"]["code"] == "NOT_FOUND"
        finally:
            await talker.close()
            await quiet.close()


async def test_send_queue_keeps_engineio_queue_semantics() -> None:
    from live.transport.fanout import SendQueue

    old: asyncio.Queue[Any] = asyncio.Queue()
    old.put_nowait("open")
    q = SendQueue.taking_over(old)
    assert isinstance(q, SendQueue) and old.empty() and q.qsize() == 1
    got: list[Any] = []

    async def consume() -> None:
        while (item := await q.get()) is not None:
            got.append(item)
            q.task_done()
        q.task_done()

    consumer = asyncio.create_task(consume())
    await q.put("a")
    q.put_nowait("b")
    await asyncio.wait_for(q.join(), 1)  # returns once every item was task_done()
    assert got == ["open", "a", "b"] and q.empty()
    q.put_nowait(None)
    await asyncio.wait_for(consumer, 1)
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    # A queue somebody already waits on is left alone.
    waited: asyncio.Queue[Any] = asyncio.Queue()
    getter = asyncio.create_task(waited.get())
    await asyncio.sleep(0)
    assert SendQueue.taking_over(waited) is waited
    getter.cancel()


async def test_the_fast_path_is_on_and_actually_runs(api: Api, server: RunningServer) -> None:
    """Fails when a new aiohttp / python-engineio / python-socketio makes the fast path fall back
    silently: every part must be on (start-up probe), and frames must have gone the fast way."""
    health = await api.ok("GET", "/healthz")
    assert health["fast_path"] == {"session": True, "direct_write": True, "short_path": True,
                                   "encode_once": True, "handshake_guard": True, "shared_pinger": True,
                                   "detached": True}, health
    sio = server.services.pusher.sio
    assert not sio.fast.missing
    before = (sio.stats.direct_frames, sio.stats.short_path_events)
    detached = sio.stats.detached_sessions
    taskless = sio.stats.taskless_events
    s, room, card = await setup_sale(api, stock=5)
    viewer = await api.guest()
    async with aiohttp.ClientSession() as session:
        sock = await RawSocket.open(session, server.url, viewer["token"])
        try:
            await sock.send(f'421["room:join",{{"room_id":"{room["id"]}"}}]')
            await sock.send(buy_frame(2, card["id"]))
            acks = await sock.wait_acks(2)
            assert acks[1][1][0]["ok"] is True
            # The card's stock push is a broadcast: encoded once, written straight to the socket.
            await api.ok("POST", f"/api/cards/{card['id']}/close", token=s["token"])
            for _ in range(200):
                if any(name == "flash:status" for name, _ in sock.events):
                    break
                await asyncio.sleep(0.05)
            assert any(name == "flash:status" for name, _ in sock.events)
        finally:
            await sock.close()
    assert sio.stats.short_path_events >= before[1] + 2  # both events took the short path
    assert sio.stats.taskless_events >= taskless + 1  # the buy without a task of its own
    assert sio.stats.direct_frames >= before[0] + 3  # their acks and the push went straight out
    assert sio.stats.detached_sessions >= detached + 1  # the websocket was taken over from aiohttp
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as r:
        text = await r.text()
    for part in ("session", "direct_write", "short_path", "encode_once", "handshake_guard", "shared_pinger",
                 "detached"):
        assert f'live_fastpath_enabled{{part="{part}"}} 1.0' in text


async def test_get_environ_is_kept_for_websocket_clients(api: Api, server: RunningServer) -> None:
    viewer = await api.guest()
    c = SioClient()
    await c.connect(server.url, viewer["token"])
    try:
        sio = server.services.pusher.sio
        environ = sio.get_environ(c.sio.get_sid())
        assert environ and environ.get("PATH_INFO") == "/socket.io/" and "HTTP_USER_AGENT" in environ
    finally:
        await c.close()


async def test_cancelling_one_waiter_of_the_send_queue_leaves_the_other_waiting() -> None:
    from live.transport.fanout import SendQueue

    q = SendQueue()
    a = asyncio.create_task(q.get())
    b = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    a.cancel()
    await asyncio.gather(a, return_exceptions=True)
    q.put_nowait("x")
    assert await asyncio.wait_for(b, 1) == "x"
    # join: cancelling one joiner leaves the other waiting for task_done.
    q.put_nowait("y")
    j1 = asyncio.create_task(q.join())
    j2 = asyncio.create_task(q.join())
    await asyncio.sleep(0)
    j1.cancel()
    await asyncio.gather(j1, return_exceptions=True)
    q.get_nowait()
    q.task_done()
    q.task_done()
    await asyncio.wait_for(j2, 1)


def test_the_probe_turns_off_exactly_the_parts_whose_internals_are_missing() -> None:
    from live.transport.fanout import LiveSocketServer, probe

    sio = LiveSocketServer(async_mode="aiohttp")
    assert all(sio.fast.parts().values()) and not sio.fast.missing
    del sio._binary_packet  # python-socketio renamed a field the short path reads
    fast = probe(sio)
    assert not fast.short_path and fast.session and fast.encode_once
    assert any("_binary_packet" in m for m in fast.missing)
    from engineio.async_socket import AsyncSocket
    ping_source = AsyncSocket.schedule_ping
    try:  # python-engineio pings some other way: the server-wide pinger stays out of it
        AsyncSocket.schedule_ping = lambda self: None  # type: ignore[method-assign]
        assert not probe(sio).shared_pinger
    finally:
        AsyncSocket.schedule_ping = ping_source  # type: ignore[method-assign]
    assert probe(sio).shared_pinger
    sio.eio._async = {k: v for k, v in sio.eio._async.items() if k != "websocket"}
    fast = probe(sio)
    assert not fast.session and not fast.direct_write and not fast.encode_once
    # With the short path off, frames go to python-socketio's own decoder.
    sio.fast = fast
    sio.direct_events["flash:buy"] = lambda *a: None  # type: ignore[assignment,return-value]
    assert sio.direct_call("x", '21["flash:buy",{}]') is None


async def test_long_polling_frames_refused_in_one_line_each(
        api: Api, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """Malformed frames over long-polling: INVALID acks where there is an ack id, and whatever
    Engine.IO itself refuses is one warning line, not a traceback."""
    guest = await api.guest()
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/socket.io/?EIO=4&transport=polling") as r:
            sid = orjson.loads((await r.text())[1:])["sid"]
        url = server.url + f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        async with http.post(url, data="40" + orjson.dumps({"token": guest["token"]}).decode()) as r:
            assert r.status == 200
        caplog.clear()
        for body in ('421["flash:buy",{', "4{bad", "9zzz", "\x1e\x1e", '422["no:event"]'):
            async with http.post(url, data=body) as r:
                assert r.status in (200, 400)
        async with http.get(url) as r:
            polled = await r.text()
    assert '431[{"ok":false,"error":{"code":"INVALID"' in polled
    assert '432[{"ok":false,"error":{"code":"INVALID"' in polled
    records = [r for r in caplog.records if r.name != "aiohttp.access"]
    assert records and not [r for r in records if r.exc_info and r.levelno >= logging.WARNING]
    assert all(len(r.getMessage()) < 300 for r in records)


async def test_an_idle_connection_costs_no_task(api: Api, server: RunningServer) -> None:
    """Per connected viewer the server runs no task at all: the websocket was taken over from
    aiohttp (its two tasks ended with its request), frames are read as they arrive (no reader
    task), the send queue is attached to the websocket (no writer task), one pinger serves the
    server."""
    def kinds() -> Counter[str]:
        return Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks())  # type: ignore[union-attr]

    async with aiohttp.ClientSession() as session:
        socks = [await RawSocket.open(session, server.url, (await api.guest())["token"]) for _ in range(3)]
        try:
            await asyncio.sleep(0.2)
            before = kinds()
            socks += [await RawSocket.open(session, server.url, (await api.guest())["token"]) for _ in range(20)]
            await asyncio.sleep(0.2)
            grown = kinds() - before
            # Kinds that grew with the connections (short-lived tasks of the app may come and go).
            per_connection = {kind: n for kind, n in grown.items() if n >= 20}
            assert per_connection == {"RawSocket._read": 20}, grown  # this test's clients
            sio = server.services.pusher.sio
            queues = [sio.eio.sockets[sid].queue for sid in list(sio.live_direct_ws)]
            assert len(queues) >= 23 and all(getattr(q, "_sink", None) is not None for q in queues)
        finally:
            for s in socks:
                await s.close()


async def test_frames_of_one_turn_leave_in_one_write_in_order(api: Api, server: RunningServer) -> None:
    """What one event-loop turn sends to one socket goes out in one write, in the order sent —
    a broadcast included (it must not overtake frames gathered before it)."""
    async with aiohttp.ClientSession() as session:
        sock = await RawSocket.open(session, server.url, (await api.guest())["token"])
        try:
            sio = server.services.pusher.sio
            await asyncio.sleep(0.1)
            (eio_sid,) = [e for e in sio.live_direct_ws if sio.eio.sockets[e].queue is not None][-1:]
            sid = sio.manager.sid_from_eio_sid(eio_sid, "/")
            writes = sio.stats.writes
            sio.deliver_text(eio_sid, '2["one",1]')
            sio.deliver_text(eio_sid, '2["two",2]')
            await sio.emit("three", 3, room=sid)  # a broadcast, in the same turn
            for _ in range(50):
                if len(sock.events) >= 3:
                    break
                await asyncio.sleep(0.02)
            assert sock.events[-3:] == [("one", 1), ("two", 2), ("three", 3)]
            assert sio.stats.writes == writes + 1
        finally:
            await sock.close()
