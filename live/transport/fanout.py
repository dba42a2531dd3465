"""Socket.IO fan-out: encode a broadcast once, and write frames straight to idle websockets.

python-socketio's manager creates one task per recipient for every emit, and Engine.IO then
encodes the packet again in each client's writer. For a card popping up on 5,000 screens that
is 5,000 tasks and 5,000 encodings. These managers encode the frame once and put the same
pre-encoded packet straight on each recipient's send queue (the queue each connection's
writer drains), in one loop without awaiting.

They subclass python-socketio's managers (its documented extension point) and fall back to the
stock behaviour for acks (callbacks), binary payloads, or if a future Engine.IO changes the
internals used here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import socketio
from aiohttp import WSMsgType, web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as EngineIOWebSocket
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

log = logging.getLogger(__name__)


class DirectWebSocket(EngineIOWebSocket):
    """Engine.IO's aiohttp websocket, without per-message deflate, known by Engine.IO sid so a
    broadcast can write its one pre-built frame to it directly, serving the short-path events
    (see :class:`LiveSocketServer`) as they are read, and running the session with fewer tasks.

    Deflate is off (as in the Node.js Socket.IO server's default): our messages are small JSON,
    and an uncompressed frame is the same bytes for every recipient.

    python-engineio (4.x, ``AsyncSocket._websocket_handler``) reads a websocket with a new task
    and a timer per message and drains the send queue through ``wait_for`` (another task per
    wait); idle, that is two pending tasks, two timers and their futures per connection, several
    KB each for 10,000 viewers. :meth:`_session` is the same protocol (upgrade probe, writer
    draining the socket's queue, reader until close or silence, then Engine.IO's own close),
    reading with aiohttp's receive timeout and a plain ``queue.get``. For a short-path event the
    handler runs right where the frame was read and its ack is written, then reading goes on; so
    one connection's short-path events are served one at a time, in the order sent (a client
    waiting for each ack, as every tapping viewer does, sees no difference; one that pipelines
    gets its acks in order). Other frames go to Engine.IO's ``receive`` unchanged.
    """

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await self._sock.prepare(request)
        registry: dict[str, web.WebSocketResponse] = self.server.live_direct_ws
        self._eio_socket = getattr(self.handler, "__self__", None)
        sid = getattr(self._eio_socket, "sid", None)
        if sid is not None:
            registry[sid] = self._sock
        try:
            if isinstance(self._eio_socket, AsyncSocket):
                # The headers were read (Engine.IO's handshake checks, CORS); nothing reads this
                # request's environ again, and it would otherwise live as long as the connection.
                environ.clear()
                await self._session(self._eio_socket)
            else:  # not the Engine.IO we know: its own loop
                self.environ = environ
                await self.handler(self)
        finally:
            if sid is not None:
                registry.pop(sid, None)
        return self._sock

    async def wait(self) -> str | bytes:
        """The next frame that is not a short-path event (those are served here)."""
        return await self._next(None)

    async def _next(self, timeout: float | None) -> str | bytes:
        sio: LiveSocketServer = self.server.live_sio
        eio_socket = self._eio_socket
        while True:
            msg = await self._sock.receive(timeout)
            data = msg.data
            if not isinstance(data, str | bytes):
                raise OSError("websocket closed")
            if (eio_socket is None or not isinstance(data, str) or data[:2] != "42"
                    or not eio_socket.upgraded or eio_socket.upgrading):
                return data
            call = sio.direct_call(eio_socket.sid, data[1:])
            if call is None:
                return data
            try:
                await sio.run_direct(eio_socket.sid, call)
            except Exception:  # never let one event's failure end the connection
                log.exception("short-path event failed")

    async def _upgrade(self, s: AsyncSocket) -> bool:
        """Engine.IO's upgrade of a long-polling socket: PING "probe" → PONG "probe", then UPGRADE.
        Packet sends are held meanwhile; False if the client did not follow through."""
        s.upgrading = True
        try:
            probe = eio_packet.Packet(encoded_packet=await self.wait())
            if probe.packet_type != eio_packet.PING or probe.data != "probe":
                return False
            await self.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            await s.queue.put(eio_packet.Packet(eio_packet.NOOP))  # end the pending poll
            upgrade = eio_packet.Packet(encoded_packet=await self.wait())
            s.upgraded = upgrade.packet_type == eio_packet.UPGRADE
            return s.upgraded
        except OSError:
            return False
        finally:
            s.upgrading = False

    async def _session(self, s: AsyncSocket) -> None:
        """python-engineio's websocket session for socket ``s`` (see the class docstring)."""
        if s.connected:  # an upgrade from long-polling
            if not await self._upgrade(s):
                return
        else:
            s.connected = True
            s.upgraded = True
            s.queue = SendQueue.taking_over(s.queue)

        async def writer() -> None:
            queue = s.queue
            while True:
                pkt = await queue.get()
                queue.task_done()
                if pkt is None:
                    break
                try:
                    await self.send(pkt.encode())
                except Exception:
                    break
            await self.close()

        writer_task = asyncio.ensure_future(writer())
        silence = s.server.ping_interval + s.server.ping_timeout
        while True:
            try:
                data = await self._next(silence)
            except Exception:
                break  # closed, broken, or nothing heard (not even a pong) for ping_interval + ping_timeout
            try:
                await s.receive(eio_packet.Packet(encoded_packet=data))
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                break
            except Exception:
                log.exception("engine.io receive error")
        await s.queue.put(None)  # let the writer finish
        await writer_task
        await s.close(wait=False, abort=True, reason=s.server.reason.TRANSPORT_CLOSE)


class SendQueue:
    """What Engine.IO uses of ``asyncio.Queue`` for a websocket's outgoing packets (put, get,
    task_done, join, empty), on one deque: ``asyncio.Queue`` carries four (its items, getters,
    putters, and its ``join`` event's waiters) — about 2 KB per idle connection."""

    __slots__ = ("_done", "_items", "_ready", "_unfinished")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._ready: asyncio.Future[None] | None = None  # set when an item arrives
        self._unfinished = 0
        self._done: asyncio.Future[None] | None = None  # set when every item was task_done()

    @classmethod
    def taking_over(cls, old: Any) -> Any:
        """A SendQueue holding what ``old`` (Engine.IO's fresh ``asyncio.Queue``: the OPEN packet
        and the like) holds, or ``old`` itself if anyone already waits on it."""
        if type(old) is not asyncio.Queue or getattr(old, "_getters", None) or getattr(old, "_putters", None):
            return old
        new = cls()
        while not old.empty():
            new.put_nowait(old.get_nowait())
            old.task_done()
        return new

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._unfinished += 1
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Any:
        while not self._items:
            if self._ready is None or self._ready.done():
                self._ready = asyncio.get_running_loop().create_future()
            await self._ready  # every waiting getter shares it, then re-checks
        return self._items.popleft()

    def task_done(self) -> None:
        self._unfinished = max(0, self._unfinished - 1)
        if self._unfinished == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            if self._done is None or self._done.done():
                self._done = asyncio.get_running_loop().create_future()
            await self._done


def write_direct(eio: Any, eio_sid: str, frame: bytes) -> bool:
    """Write one uncompressed text frame straight to a client's websocket, if that is safe now:
    a plain established websocket (not mid-upgrade, no deflate) with nothing queued in Engine.IO
    for it (so nothing is overtaken). Returns False when the caller must queue instead."""
    sock = eio.sockets.get(eio_sid)
    ws = eio.live_direct_ws.get(eio_sid)
    writer = getattr(ws, "_writer", None)
    if (sock is None or ws is None or writer is None or writer.compress or ws.closed or sock.closed
            or not sock.upgraded or sock.upgrading or not sock.queue.empty()):
        return False
    try:
        writer._write_websocket_frame(frame, WSMsgType.TEXT, 0)
    except Exception:  # a closing transport: let Engine.IO deal with it
        return False
    return True


DirectHandler = Callable[..., Awaitable[Any]]
DirectCall = tuple[DirectHandler, str, str, list[Any]]


class LiveSocketServer(socketio.AsyncServer):
    """python-socketio's server with a short path for the events that carry a storm.

    * Events registered with :meth:`on_direct` (every ``SocketApp`` event: one JSON payload, an
      ack) are parsed straight from the Engine.IO message — ``2<ack id>["name", payload]`` on the
      default namespace — and their ack is written as one pre-built frame. python-socketio's
      generic packet decoder (a character-by-character parse plus a scan of the payload for
      binary parts), its dispatch layers and its ack packet are skipped; anything else (another
      namespace, binary attachments, no ack id, an unknown event, a client not connected to
      ``/``) takes python-socketio's own path, unchanged.
    * Single-recipient packets (acks above all: one per tap) skip Engine.IO's per-connection
      writer task when the connection is idle.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_events: dict[str, DirectHandler] = {}
        # This server's Engine.IO uses DirectWebSocket (no global patching) and knows us.
        eio = self.eio
        eio.live_direct_ws = {}
        eio.live_sio = self
        eio._async = {**eio._async, "websocket": DirectWebSocket}

    def on_direct(self, event: str, handler: DirectHandler) -> None:
        """Serve ``event`` on the short path (and on the stock one, for frames it does not take)."""
        self.direct_events[event] = handler
        self.on(event, handler)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        call = self.direct_call(eio_sid, data)
        if call is None:
            await super()._handle_eio_message(eio_sid, data)
        else:
            await self.run_direct(eio_sid, call)

    async def run_direct(self, eio_sid: str, call: DirectCall) -> None:
        """Run a short-path event's handler and send its ack."""
        handler, sid, ack_id, args = call
        result = await handler(sid, *args)
        try:
            ack = f"3{ack_id}" + orjson.dumps([] if result is None else [result]).decode()
        except TypeError:  # not plain JSON: let python-socketio encode it
            await super()._send_packet(eio_sid, self.packet_class(
                sio_packet.ACK, namespace="/", id=int(ack_id), data=[result]))
            return
        await self._send_text(eio_sid, ack)

    def direct_call(self, eio_sid: str, data: Any) -> DirectCall | None:
        """``(handler, sid, ack id, args)`` when this Socket.IO packet can take the short path."""
        if (not self.direct_events or not isinstance(data, str) or data[:1] != "2"
                or eio_sid in self._binary_packet):
            return None
        i = 1
        n = len(data)
        while i < n and "0" <= data[i] <= "9":
            i += 1
        if i == 1 or i > 20 or i == n or data[i] != "[":
            return None  # no ack id, a namespace, or not an event array
        try:
            parts = orjson.loads(data[i:])
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parts, list) or not parts or not isinstance(parts[0], str):
            return None
        handler = self.direct_events.get(parts[0])
        sid = self.manager.sid_from_eio_sid(eio_sid, "/") if handler is not None else None
        if handler is None or sid is None:
            return None
        return handler, sid, data[1:i], parts[1:]

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            await self._send_text(eio_sid, encoded)
        else:  # binary attachments
            await super()._send_packet(eio_sid, pkt)

    async def _send_text(self, eio_sid: str, packet: str) -> None:
        """One encoded Socket.IO packet: straight onto the client's websocket when it is idle,
        else through Engine.IO's queue."""
        if not write_direct(self.eio, eio_sid, ("4" + packet).encode()):
            await self.eio.send(eio_sid, packet)


class _Encoded(eio_packet.Packet):
    """An Engine.IO MESSAGE packet whose wire form is computed once and shared."""

    def __init__(self, wire: str) -> None:
        super().__init__(eio_packet.MESSAGE, wire[1:])
        self._wire = wire

    def encode(self, b64: bool = False) -> str:
        return self._wire


class EncodeOnceEmit(socketio.AsyncManager):
    """Local delivery of an emit: one encoding, no task per recipient."""

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None,
                   callback: Any = None, to: Any = None, **kwargs: Any) -> None:
        room = to or room
        sockets = getattr(getattr(self.server, "eio", None), "sockets", None)
        if callback is not None or sockets is None or namespace not in self.rooms:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                      callback=callback, **kwargs)
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        if isinstance(encoded, list):  # binary attachments: the stock path knows how
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                      **kwargs)
        text = eio_packet.Packet(eio_packet.MESSAGE, encoded).encode()
        wire = _Encoded(text)
        frame = text.encode()
        eio = self.server.eio
        direct = hasattr(eio, "live_direct_ws")
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            sock = sockets.get(eio_sid)
            if sock is None or sock.closed:
                continue
            # Straight onto the wire when safe, else through Engine.IO's queue like any packet.
            if not (direct and write_direct(eio, eio_sid, frame)):
                sock.queue.put_nowait(wire)
        return None


class FanoutManager(EncodeOnceEmit):
    """For a single process."""


class FanoutRedisManager(socketio.AsyncRedisManager, EncodeOnceEmit):
    """Across processes: each process receives the emit through Redis, then delivers it with
    one encoding to its own clients."""
