"""A lean Socket.IO v5 / Engine.IO v4 client over aiohttp websockets, for load testing.

python-socketio's ``AsyncClient`` keeps several tasks, queues and an HTTP session per
connection; at ten thousand viewers per process that cost dominates the load generator and
distorts what we measure. This client keeps one reader task per connection, one shared
``aiohttp.ClientSession`` for all of them, and decodes an event's JSON only when its handler
asks for it (a viewer in a chat storm counts most messages without parsing them).

Wire, text frames only (the server sends no binary packets on our events)::

    server → 0{"sid":..,"pingInterval":..}        Engine.IO open
    client → 40{"token":"..."}                    Socket.IO CONNECT with auth payload
    server → 40{"sid":".."}  or  44{..}           connected, or refused
    client → 42["name",data]                      event
    client → 42<id>["name",data]  server → 43<id>[data]   event with ack
    server → 2    client → 3                      Engine.IO ping / pong
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

# A handler sees (event name, the raw frame, where the JSON array starts, arrival time); it
# decodes with :func:`event_data` only if it cares about the payload.
EventHandler = Callable[[str, str, int, float], None]


_CODE_IN_TEXT = re.compile(r"""['"]code['"]\s*:\s*['"]([A-Z_]+)['"]""")


class ConnectRefused(Exception):
    """The server refused the Socket.IO CONNECT (``44`` packet), e.g. a bad token."""

    def __init__(self, data: Any) -> None:
        super().__init__(f"connect refused: {data!r}")
        self.data = data

    @property
    def code(self) -> str:
        """The contract's error code when the refusal carries one, else ``CONNECT_REFUSED``."""
        d = self.data
        if isinstance(d, dict):
            inner = d.get("data", d)
            if isinstance(inner, dict):
                err = inner.get("error", inner)
                if isinstance(err, dict) and isinstance(err.get("code"), str):
                    return str(err["code"])
            # python-socketio puts a refusal's only argument, str()-ed, into "message": a dict's
            # repr such as "{'code': 'UNAUTHORIZED', ...}". Read the code out of that too.
            m = _CODE_IN_TEXT.search(str(d.get("message", "")))
            if m:
                return m.group(1)
        return "CONNECT_REFUSED"


class Disconnected(Exception):
    """The connection closed while a call was waiting for its ack."""


def event_data(raw: str, start: int) -> Any:
    """The payload of an event frame ``42["name",data]`` (``None`` when it has none)."""
    arr = orjson.loads(raw[start:])
    return arr[1] if len(arr) > 1 else None


def socket_url(base: str) -> str:
    """``http://host:port`` → ``ws://host:port/socket.io/?EIO=4&transport=websocket``."""
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return urlunsplit((scheme, parts.netloc, "/socket.io/", "EIO=4&transport=websocket", ""))


class LeanSocket:
    """One Socket.IO connection. Not thread-safe; one event loop."""

    __slots__ = ("_acks", "_closed", "_next_id", "_reader", "_session", "_url", "_ws", "on_event",
                 "received", "sent", "sid")

    def __init__(self, session: aiohttp.ClientSession, url: str, on_event: EventHandler | None = None) -> None:
        self._session = session
        self._url = socket_url(url)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._closed = False
        self.on_event = on_event
        self.sid: str | None = None
        # Frames in each direction, so the load tester can price its own CPU per message.
        self.received = 0
        self.sent = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closed and self.sid is not None

    async def connect(self, auth: dict[str, Any] | None, timeout: float = 10.0) -> None:
        """Open the websocket and complete the Socket.IO CONNECT, or raise.

        Raises :class:`ConnectRefused` on a ``44`` refusal, ``TimeoutError``, or an aiohttp error.
        """
        async with asyncio.timeout(timeout):
            ws = await self._session.ws_connect(self._url, autoping=True, compress=0, max_msg_size=0)
            self._ws = ws
            try:
                opened = await ws.receive()
                if opened.type is not aiohttp.WSMsgType.TEXT or not opened.data.startswith("0"):
                    raise ConnectionError(f"unexpected Engine.IO open: {opened.data!r}")
                await ws.send_str("40" + (orjson.dumps(auth).decode() if auth is not None else ""))
                while True:
                    msg = await ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"closed during connect ({msg.type.name})")
                    data: str = msg.data
                    if data == "2":
                        await ws.send_str("3")
                    elif data.startswith("40"):
                        self.sid = orjson.loads(data[2:]).get("sid") if len(data) > 2 else ""
                        break
                    elif data.startswith("44"):
                        raise ConnectRefused(orjson.loads(data[2:]) if len(data) > 2 else None)
            except BaseException:
                await ws.close()
                self._closed = True
                raise
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data: str = msg.data
                self.received += 1
                c = data[0]
                if c == "4":
                    kind = data[1] if len(data) > 1 else ""
                    if kind == "2":
                        if self.on_event is not None:
                            start = data.index("[", 2)
                            # Event names are plain ASCII without quotes: no JSON decode needed.
                            name = data[start + 2:data.index('"', start + 2)]
                            self.on_event(name, data, start, time.monotonic())
                    elif kind == "3":
                        start = data.index("[", 2)
                        fut = self._acks.pop(int(data[2:start]), None)
                        if fut is not None and not fut.done():
                            arr = orjson.loads(data[start:])
                            fut.set_result(arr[0] if arr else None)
                    elif kind == "1":
                        break
                elif c == "2":
                    self.sent += 1
                    await ws.send_str("3")
                elif c == "1":
                    break
        except (aiohttp.ClientError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._closed = True
            for fut in self._acks.values():
                if not fut.done():
                    fut.set_exception(Disconnected("connection closed"))
            self._acks.clear()

    async def emit(self, event: str, data: Any = None) -> None:
        """Send an event without asking for an ack."""
        if self._ws is None or self._closed:
            raise Disconnected("not connected")
        self.sent += 1
        await self._ws.send_str("42" + orjson.dumps([event, data]).decode())

    async def call(self, event: str, data: Any = None, timeout: float = 10.0) -> Any:
        """Send an event and wait for its ack; raises ``TimeoutError`` or :class:`Disconnected`."""
        if self._ws is None or self._closed:
            raise Disconnected("not connected")
        self._next_id += 1
        ack_id = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = fut
        self.sent += 1
        try:
            await self._ws.send_str(f"42{ack_id}" + orjson.dumps([event, data]).decode())
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._acks.pop(ack_id, None)

    async def close(self) -> None:
        """Send a Socket.IO DISCONNECT and close the websocket; safe to call twice."""
        ws = self._ws
        if ws is None:
            return
        if not self._closed:
            self._closed = True
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                await ws.send_str("41")
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
            await asyncio.wait_for(ws.close(), 2)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None


def make_session(limit_per_host: int = 0) -> aiohttp.ClientSession:
    """One session for many sockets: no connection cap (aiohttp counts websockets against it)."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=limit_per_host, force_close=False,
                                     enable_cleanup_closed=False)
    return aiohttp.ClientSession(connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(),
                                 # No total: it would also bound a websocket's lifetime. HTTP calls
                                 # pass their own timeout.
                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=15))
