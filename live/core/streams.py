"""Redis Stream → SQL persistence with a consumer group (used for orders and chat).

Entries are acknowledged (and deleted) only after ``apply`` committed them, so a crash of the
process or of the database never loses one: they stay pending in the stream, are re-read by
the same consumer, or claimed (XAUTOCLAIM) by another after ``claim_idle_ms``. ``apply`` must be
idempotent (an entry may be applied twice if we die between commit and ack).

When the database is unreachable nothing is dead-lettered: entries wait in the stream and land
when it returns. Only an entry that fails on its own while its neighbours commit (a poison
entry) is moved to a dead-letter stream after ``max_deliveries`` attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str]]
Apply = Callable[[str, list[Entry]], Awaitable[None]]

# Errors that mean "the database is not reachable", not "this entry is bad".
UNREACHABLE = (OperationalError, InterfaceError, ConnectionError, OSError, TimeoutError)


def _is_unreachable(e: BaseException) -> bool:
    if isinstance(e, UNREACHABLE):
        return True
    return isinstance(e, DBAPIError) and bool(e.connection_invalidated)


class StreamConsumer:
    def __init__(self, redis: Any, *, group: str, consumer: str, apply: Apply,
                 streams: Callable[[], Awaitable[list[str]]], dead_key: Callable[[str], str],
                 on_dead: Callable[[str], None] = lambda s: None, batch: int = 500,
                 claim_idle_ms: int = 30000, max_deliveries: int = 5, idle_sleep_s: float = 0.05,
                 gather_s: float = 0.0,
                 live_consumers: Callable[[], Awaitable[set[str]]] | None = None,
                 claim_every_s: float | None = None) -> None:
        self._redis = redis
        self.group = group
        self.consumer = consumer
        self._apply = apply
        self._streams = streams
        self._dead_key = dead_key
        self._on_dead = on_dead
        self._batch = batch
        self._claim_idle_ms = claim_idle_ms
        self._max_deliveries = max_deliveries
        self._idle_sleep_s = idle_sleep_s
        # After a round that found less than a full batch, wait this long so that the next
        # transaction carries more entries (a transaction's fixed cost dwarfs a row's).
        self._gather_s = gather_s
        # Names of consumers known to be alive (process heartbeats): entries held by any other
        # consumer are taken over at once, without waiting ``claim_idle_ms``.
        self._live_consumers = live_consumers
        self._claim_every_s = claim_every_s if claim_every_s is not None else claim_idle_ms / 2000
        self._groups: set[str] = set()
        self._failures: dict[tuple[str, str], int] = {}
        self.healthy = True  # False while the database is unreachable

    async def ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            await self._redis.xgroup_create(stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._groups.add(stream)

    async def _read(self, stream: str, start: str) -> list[Entry]:
        await self.ensure_group(stream)
        try:
            res = await self._redis.xreadgroup(self.group, self.consumer, {stream: start}, count=self._batch)
        except ResponseError as e:
            if "NOGROUP" in str(e):  # the stream was deleted/recreated (e.g. Redis data loss)
                self._groups.discard(stream)
                return []
            raise
        if not res:
            return []
        # RESP2: [[stream, [(id, fields), ...]]]; RESP3: {stream: [[(id, fields)...]]}
        if isinstance(res, dict):
            entries = next(iter(res.values()))
            entries = entries[0] if entries and isinstance(entries[0], list) else entries
        else:
            entries = res[0][1]
        return [(i, f) for i, f in entries if f is not None]

    async def _claim(self, stream: str) -> list[Entry]:
        await self.ensure_group(stream)
        try:
            res = await self._redis.xautoclaim(stream, self.group, self.consumer, self._claim_idle_ms,
                                               start_id="0-0", count=self._batch)
        except ResponseError as e:
            if "NOGROUP" in str(e):
                self._groups.discard(stream)
                return []
            raise
        return [(i, f) for i, f in res[1] if f is not None]

    async def _claim_dead(self, stream: str) -> list[Entry]:
        """Entries pending for consumers that are no longer alive (their process died)."""
        if self._live_consumers is None:
            return []
        try:
            summary = await self._redis.xpending(stream, self.group)
        except ResponseError:
            return []
        holders = [c["name"] for c in summary.get("consumers") or [] if c["name"] != self.consumer]
        if not holders:
            return []
        alive = await self._live_consumers()
        entries: list[Entry] = []
        for name in holders:
            if name in alive:
                continue
            rows = await self._redis.xpending_range(stream, self.group, min="-", max="+", count=self._batch,
                                                    consumername=name)
            ids = [r["message_id"] for r in rows]
            if ids:
                claimed = await self._redis.xclaim(stream, self.group, self.consumer, 0, ids)
                entries += [(i, f) for i, f in claimed if f is not None]
        return entries

    async def _ack(self, stream: str, ids: list[str]) -> None:
        if not ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(stream, self.group, *ids)
        pipe.xdel(stream, *ids)
        await pipe.execute()

    async def _dead_letter(self, stream: str, entry: Entry, error: str) -> None:
        entry_id, fields = entry
        await self._redis.xadd(self._dead_key(stream), {**fields, "_id": entry_id, "_error": error[:500]})
        await self._ack(stream, [entry_id])
        self._failures.pop((stream, entry_id), None)
        self._on_dead(stream)
        log.error("dead-lettered %s %s: %s", stream, entry_id, error)

    async def process(self, stream: str, entries: list[Entry]) -> int:
        """Apply and acknowledge ``entries``; returns how many were committed."""
        if not entries:
            return 0
        try:
            await self._apply(stream, entries)
        except Exception as e:
            if _is_unreachable(e):
                raise
            # Find the poison entry: apply one by one; good ones commit, bad ones count a failure.
            done = 0
            for entry in entries:
                try:
                    await self._apply(stream, [entry])
                except Exception as one:
                    if _is_unreachable(one):
                        raise
                    key = (stream, entry[0])
                    self._failures[key] = self._failures.get(key, 0) + 1
                    if self._failures[key] >= self._max_deliveries:
                        await self._dead_letter(stream, entry, repr(one))
                    else:
                        log.warning("persisting %s %s failed (%d): %r", stream, entry[0], self._failures[key], one)
                    continue
                await self._ack(stream, [entry[0]])
                done += 1
            return done
        await self._ack(stream, [i for i, _ in entries])
        for i, _ in entries:
            self._failures.pop((stream, i), None)
        return len(entries)

    async def drain(self, stream: str, max_rounds: int = 100) -> int:
        """Persist everything one stream holds for us now (our pending entries, then new ones)."""
        await self.ensure_group(stream)
        total = 0
        for _ in range(max_rounds):
            n = await self.process(stream, await self._read(stream, "0"))
            n += await self.process(stream, await self._read(stream, ">"))
            if n == 0:
                break
            total += n
        return total

    async def drain_once(self, *, claim: bool = False) -> int:
        """One pass over every stream: our own pending entries, then new ones (and claims)."""
        total = 0
        for stream in await self._streams():
            # Our own pending entries first (left by a failed apply or a restart with our name).
            total += await self.process(stream, await self._read(stream, "0"))
            total += await self.process(stream, await self._read(stream, ">"))
            if claim:
                total += await self.process(stream, await self._claim_dead(stream))
                total += await self.process(stream, await self._claim(stream))
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Persist until ``stop``; back off while the database is unreachable."""
        loop = asyncio.get_running_loop()
        last_claim = 0.0
        backoff = 0.1
        while not stop.is_set():
            try:
                claim = loop.time() - last_claim > self._claim_every_s
                n = await self.drain_once(claim=claim)
                if claim:
                    last_claim = loop.time()
                self.healthy = True
                backoff = 0.1
                if n >= self._batch:
                    continue  # a full batch: more is waiting
                delay = self._gather_s if n else self._idle_sleep_s
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.healthy = False
                log.warning("stream persister: %s; retrying in %.1fs", e, backoff)
                delay = backoff
                backoff = min(backoff * 2, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
