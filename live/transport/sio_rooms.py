"""Socket.IO events of rooms: ``room:join``, ``room:leave``; presence on disconnect; kicks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field

from live.core import keys
from live.core.auth import Principal
from live.core.push import room_channel
from live.transport.sio import SioPusher, SocketApp

if TYPE_CHECKING:
    from live.app.services import Services


class RoomRef(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    room_id: str = Field(min_length=1, max_length=64)


def register(app: SocketApp) -> None:
    sio = app.sio

    @app.event("room:join", RoomRef)
    async def join(sid: str, who: Principal, p: RoomRef) -> dict[str, Any]:
        """Join a room: the ack carries its snapshot and recent chat; pushes follow."""
        svc = app.svc
        result = await svc.rooms.join(p.room_id, who)
        await sio.enter_room(sid, room_channel(p.room_id))
        # The streamer's studio joins to receive pushes (and chat) but is not a viewer of its own show.
        counted = result["room"]["streamer"]["id"] != who.id
        result["room"]["viewers"] = await svc.presence.join(p.room_id, sid, who.id, counted=counted)
        return result

    @app.event("room:leave", RoomRef)
    async def leave(sid: str, who: Principal, p: RoomRef) -> dict[str, Any]:
        """Leave a room (no more pushes from it)."""
        svc = app.svc
        await sio.leave_room(sid, room_channel(p.room_id))
        await svc.presence.leave(p.room_id, sid)
        return {}

    async def on_disconnect(sid: str, who: Principal) -> None:
        await app.svc.presence.disconnect(sid)

    app.on_disconnect.append(on_disconnect)

    # A kick (ban) must reach the user's connections on every process.
    async def kick(room_id: str, user_id: str) -> None:
        await app.svc.bus.publish(keys.CH_KICK, f"{room_id} {user_id}")

    async def on_kick(message: str) -> None:
        svc = app.svc
        room_id, _, user_id = message.partition(" ")
        for sid in svc.presence.sids_in(room_id, user_id):
            await sio.leave_room(sid, room_channel(room_id))
            await svc.presence.leave(room_id, sid)
            await sio.emit("room:kicked", {"room_id": room_id}, to=sid)

    def start(svc: Services) -> None:
        pusher = cast(SioPusher, svc.pusher)  # the server's services push through Socket.IO
        pusher.kick_handler = kick
        svc.bus.subscribe(keys.CH_KICK, on_kick)

    app.on_start.append(start)
