"""Socket.IO client managers that encode a broadcast once.

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
from engineio import packet as eio_packet
from socketio import packet as sio_packet


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
        wire = _Encoded(eio_packet.Packet(eio_packet.MESSAGE, encoded).encode())
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            sock = sockets.get(eio_sid)
            if sock is not None and not sock.closed:
                sock.queue.put_nowait(wire)
        return None


class FanoutManager(EncodeOnceEmit):
    """For a single process."""


class FanoutRedisManager(socketio.AsyncRedisManager, EncodeOnceEmit):
    """Across processes: each process receives the emit through Redis, then delivers it with
    one encoding to its own clients."""
