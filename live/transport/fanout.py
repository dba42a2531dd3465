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

from typing import Any

import socketio
from aiohttp import WSMsgType, web
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as EngineIOWebSocket
from socketio import packet as sio_packet


class DirectWebSocket(EngineIOWebSocket):
    """Engine.IO's aiohttp websocket, without per-message deflate, and known by Engine.IO sid so a
    broadcast can write its one pre-built frame to it directly.

    Deflate is off (as in the Node.js Socket.IO server's default): our messages are small JSON,
    and an uncompressed frame is the same bytes for every recipient.
    """

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await self._sock.prepare(request)
        self.environ = environ
        registry: dict[str, web.WebSocketResponse] = self.server.live_direct_ws
        sid = getattr(getattr(self.handler, "__self__", None), "sid", None)
        if sid is not None:
            registry[sid] = self._sock
        try:
            await self.handler(self)
        finally:
            if sid is not None:
                registry.pop(sid, None)
        return self._sock


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


class LiveSocketServer(socketio.AsyncServer):
    """python-socketio's server whose single-recipient packets (acks above all: one per tap)
    skip Engine.IO's per-connection writer task when the connection is idle."""

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, str) and hasattr(self.eio, "live_direct_ws"):
            text = eio_packet.Packet(eio_packet.MESSAGE, encoded).encode()
            if write_direct(self.eio, eio_sid, text.encode()):
                return
        await super()._send_packet(eio_sid, pkt)


def install_direct_websockets(sio: socketio.AsyncServer) -> None:
    """Use :class:`DirectWebSocket` for this server only (no global patching)."""
    eio = sio.eio
    eio.live_direct_ws = {}
    eio._async = {**eio._async, "websocket": DirectWebSocket}


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
