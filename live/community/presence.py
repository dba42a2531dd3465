"""Honest viewer counts across processes.

A room's count is the number of distinct users with at least one connection in it, on any
process: tabs and reconnects of one user count once. Each process keeps its share in its
own hash and refreshes a heartbeat; when a process stops heartbeating (``kill -9``), any
other process reaps its share within ``heartbeat_dead_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from live.core import keys
from live.core.errors import log_loop_error
from live.core.ids import now_ms

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, redis: Any, scripts: Any, proc_id: str, *, heartbeat_s: float, dead_after_s: float,
                 push_interval_s: float, on_count: Callable[[str, int], Awaitable[None]],
                 rooms_gauge: Any = None) -> None:
        self._redis = redis
        self._scripts = scripts
        self.proc_id = proc_id
        self._heartbeat_s = heartbeat_s
        self._dead_after_ms = int(dead_after_s * 1000)
        self._push_ms = int(push_interval_s * 1000)
        self._on_count = on_count
        # (sid -> rooms) and (room -> sid -> user): this process's connections. A connection's
        # rooms are a tuple (one room, nearly always): 48 bytes where a set is 216, per viewer.
        self._sid_rooms: dict[str, tuple[str, ...]] = {}
        self._room_sids: dict[str, dict[str, str]] = defaultdict(dict)
        self._registered = False
        self._host_sids: dict[str, set[str]] = defaultdict(set)  # room -> its streamer's sids here
        self._rooms_gauge = rooms_gauge  # metrics: rooms with viewers on this process

    # --- connections ---------------------------------------------------------------
    async def join(self, room_id: str, sid: str, user_id: str, *, counted: bool = True) -> int:
        """Put this connection in the room and count it (once, however often it joins).

        ``counted=False`` (the room's own streamer) joins without being counted as a viewer.
        """
        rooms = self._sid_rooms.get(sid, ())
        if room_id in rooms:
            return await self.count(room_id)
        self._sid_rooms[sid] = (*rooms, room_id)
        if not counted:
            # The streamer's studio: it hosts the room (a live room with no host ends by itself).
            self._host_sids[room_id].add(sid)
            return await self.count(room_id)
        self._room_sids[room_id][sid] = user_id
        await self._redis.sadd(keys.proc_rooms(self.proc_id), room_id)
        return int(await self._scripts.presence_join(
            keys=[keys.room_users(room_id), keys.room_proc_users(room_id, self.proc_id)], args=[user_id]))

    async def leave(self, room_id: str, sid: str) -> int | None:
        """Stop counting this connection in the room; None when it was not in it."""
        rooms = self._sid_rooms.get(sid)
        if not rooms or room_id not in rooms:
            return None
        rest = tuple(r for r in rooms if r != room_id)
        if rest:
            self._sid_rooms[sid] = rest
        else:
            del self._sid_rooms[sid]
        hosts = self._host_sids.get(room_id)
        if hosts is not None and sid in hosts:
            hosts.discard(sid)
            if not hosts:
                del self._host_sids[room_id]
        user_id = self._room_sids.get(room_id, {}).pop(sid, None)
        if user_id is None:  # joined uncounted
            return await self.count(room_id)
        if not self._room_sids[room_id]:
            del self._room_sids[room_id]
        return int(await self._scripts.presence_leave(
            keys=[keys.room_users(room_id), keys.room_proc_users(room_id, self.proc_id)], args=[user_id]))

    async def disconnect(self, sid: str) -> None:
        for room_id in list(self._sid_rooms.get(sid, ())):
            await self.leave(room_id, sid)

    def rooms_of(self, sid: str) -> set[str]:
        return set(self._sid_rooms.get(sid, ()))

    def sids_in(self, room_id: str, user_id: str | None = None) -> list[str]:
        """This process's connections in a room (of one user, if given)."""
        return [s for s, u in self._room_sids.get(room_id, {}).items() if user_id is None or u == user_id]

    def hosted_rooms(self) -> list[str]:
        """Rooms whose streamer has a connection on this process."""
        return list(self._host_sids)

    def local_rooms(self) -> list[str]:
        return list(self._room_sids)

    async def count(self, room_id: str) -> int:
        return int(await self._redis.hlen(keys.room_users(room_id)))

    # --- heartbeats, reaping, coalesced pushes ------------------------------------------
    async def heartbeat(self) -> None:
        added = await self._redis.zadd(keys.PROCS, {self.proc_id: now_ms()})
        if added and self._registered:
            # We were reaped (a long pause): put our connections back.
            log.warning("process %s was reaped while alive; re-registering its viewers", self.proc_id)
            await self._reregister()
        self._registered = True

    async def _reregister(self) -> None:
        for room_id, sids in list(self._room_sids.items()):
            await self._scripts.presence_reap(
                keys=[keys.room_users(room_id), keys.room_proc_users(room_id, self.proc_id)])
            await self._redis.sadd(keys.proc_rooms(self.proc_id), room_id)
            for user_id in list(sids.values()):
                await self._scripts.presence_join(
                    keys=[keys.room_users(room_id), keys.room_proc_users(room_id, self.proc_id)], args=[user_id])

    async def reap_dead(self) -> list[str]:
        """Drop the viewers of every process whose heartbeat is older than the limit."""
        cutoff = now_ms() - self._dead_after_ms
        dead = await self._redis.zrangebyscore(keys.PROCS, "-inf", cutoff)
        touched: list[str] = []
        for proc in dead:
            if proc == self.proc_id:
                continue
            touched += await self.reap(proc)
            log.info("reaped dead process %s (%d rooms)", proc, len(touched))
        return touched

    async def reap(self, proc: str) -> list[str]:
        rooms = list(await self._redis.smembers(keys.proc_rooms(proc)))
        for room_id in rooms:
            await self._scripts.presence_reap(keys=[keys.room_users(room_id), keys.room_proc_users(room_id, proc)])
        await self._redis.delete(keys.proc_rooms(proc))
        await self._redis.zrem(keys.PROCS, proc)
        return rooms

    async def push_counts(self, rooms: list[str]) -> None:
        """Push ``room:viewers`` for rooms whose count changed (once per interval, any process)."""
        for room_id in rooms:
            n = await self.count(room_id)
            push = await self._scripts.coalesce(
                keys=[keys.room_tick(room_id, "viewers:last"), keys.room_tick(room_id, "viewers")],
                args=[n, self._push_ms])
            if int(push) == 1:
                await self._on_count(room_id, n)

    async def run(self, stop: asyncio.Event) -> None:
        """The presence loop: heartbeat, reap, push; until ``stop`` is set."""
        last_beat = 0.0
        loop = asyncio.get_running_loop()
        interval = self._push_ms / 1000
        while not stop.is_set():
            try:
                extra: list[str] = []
                if loop.time() - last_beat >= self._heartbeat_s:
                    await self.heartbeat()
                    extra = await self.reap_dead()
                    last_beat = loop.time()
                local = self.local_rooms()
                if self._rooms_gauge is not None:
                    self._rooms_gauge.set(len(local))
                await self.push_counts(sorted(set(local) | set(extra)))
            except Exception as e:
                log_loop_error(log, "presence loop error", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def shutdown(self) -> None:
        """Clean exit: our viewers leave the counts now rather than after the timeout."""
        try:
            await self.reap(self.proc_id)
        except Exception:
            log.exception("presence shutdown")
        self._sid_rooms.clear()
        self._room_sids.clear()
        self._host_sids.clear()
