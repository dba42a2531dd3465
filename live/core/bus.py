"""Process-to-process notices over Redis pub/sub (fast sold-out hints, kicks, ...).

One subscriber connection per process, dispatching each message to the handlers that
registered for its channel. Messages are hints: handlers must tolerate loss and repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)
Handler = Callable[[str], Awaitable[None]]


class Bus:
    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self.ready = asyncio.Event()

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Register before ``run`` starts."""
        self._handlers[channel].append(handler)

    async def publish(self, channel: str, message: str) -> None:
        await self._redis.publish(channel, message)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; reconnect after errors."""
        while not stop.is_set():
            if not self._handlers:
                self.ready.set()
                await stop.wait()
                return
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._handlers)
                self.ready.set()
                while not stop.is_set():
                    msg = await pubsub.get_message(timeout=0.5)
                    if msg is None:
                        continue
                    for h in self._handlers.get(msg["channel"], ()):
                        try:
                            await h(msg["data"])
                        except Exception:
                            log.exception("bus handler for %s failed", msg["channel"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("bus connection lost (%s); reconnecting", e)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
