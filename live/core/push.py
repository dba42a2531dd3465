"""How domain code sends events to clients without knowing Socket.IO.

The transport layer provides the implementation (``live.transport.sio.SioPusher``);
tests may provide their own that records what was pushed.
"""

from __future__ import annotations

from typing import Any, Protocol


def room_channel(room_id: str) -> str:
    return f"room:{room_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


class Pusher(Protocol):
    async def to_room(self, room_id: str, event: str, data: Any) -> None:
        """Send ``event`` to every client in the room, on every process."""

    async def to_user(self, user_id: str, event: str, data: Any) -> None:
        """Send ``event`` to every connection of one user, on every process."""

    async def kick(self, room_id: str, user_id: str) -> None:
        """Remove a user's connections from a room, on every process."""
