"""A card's stock in Redis: every change is one Lua script over keys of one hash tag.

This module only speaks Redis; ``live.commerce.flashbuy`` and ``live.commerce.orders`` hold the rules around it.
Orders are kept as small JSON objects in the card's orders hash (``u`` user, ``q`` qty,
``s`` status, ``c`` created ms, ``p`` pay_by ms, ``r`` request id, ``a`` amount cents).

Fencing (docs/operations.md): every script that changes a card bumps the card's ``seq`` and
stamps it on the event it appends; SQL keeps the highest seq it has persisted. A Redis whose
seq is below what SQL or this process has seen went back in time; ``buy.lua`` fences such a
card itself, and a fenced card refuses every change until it is rebuilt from SQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from live.commerce.views import CompactOrder, parse_order
from live.core import keys
from live.core.ids import now_ms
from live.core.scripts import Scripts

log = logging.getLogger(__name__)
SCRIPTS = ["buy", "release", "restock", "card_status", "card_fence", "card_rebuild"]
STATE_FIELDS = ("status", "stock", "left", "limit", "price", "starts_ms", "ends_ms", "room", "seq", "fence")


@dataclass(frozen=True, slots=True)
class CardState:
    status: str
    stock: int  # initial stock plus restocks
    left: int
    limit: int
    price_cents: int
    starts_ms: int
    ends_ms: int  # 0: no end
    room_id: str
    seq: int = 0  # bumped by every change; see the module docstring
    fence: str | None = None  # set while the card is fenced for a rebuild

    @property
    def sold(self) -> int:
        return self.stock - self.left


# Replies of the scripts, as Redis turns Lua values into RESP: strings and integers (a Lua
# number is truncated to an integer). Cast once here, where each script's reply is read.
Scalar = str | int
# A card's state fields as HMGET returns them (None: the field or the card is missing).
StateFields = list[str | None]


@dataclass(frozen=True, slots=True)
class Result:
    code: str
    order: CompactOrder | None
    left: int
    status: str = ""


def _order(raw: str | bytes | None) -> CompactOrder | None:
    return parse_order(raw) if raw else None


def card_keys(card_id: str) -> list[str]:
    return [keys.card_state(card_id), keys.card_bought(card_id), keys.card_requests(card_id),
            keys.card_orders(card_id), keys.card_deadlines(card_id), keys.card_stream(card_id)]


class SeqFloors:
    """Per card, the highest ``seq`` this process has seen Redis return or SQL hold. Passed to
    every buy: Redis answering with less means it lost writes, and the buy fences the card."""

    def __init__(self) -> None:
        self._f: dict[str, int] = {}

    def get(self, card_id: str) -> int | None:
        return self._f.get(card_id)

    def raise_to(self, card_id: str, seq: int) -> None:
        # 0 is never stored here: an unknown card id (a NOT_FOUND buy) leaves no entry behind.
        if seq > self._f.get(card_id, 0):
            self._f[card_id] = seq

    def known(self, card_id: str, sql_seq: int) -> None:
        """SQL has the card, with this seq."""
        self._f[card_id] = max(self._f.get(card_id, 0), sql_seq)

    def forget(self, card_id: str) -> None:
        self._f.pop(card_id, None)


class Inventory:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts,
                 durability: tuple[str, int, int] = ("fast", 1, 500)) -> None:
        self._redis = redis
        self._s = scripts
        self.floors = SeqFloors()
        # Strict durability (docs/operations.md): after a buy, WAIT for replicas or WAITAOF for
        # the local disk before acknowledging. Resolved against the server at the first buy.
        self._durability = durability
        self.durability: str | None = None  # the mode in effect, once resolved
        self._wait: tuple[Scalar, ...] = ()

    async def init_card(self, card_id: str, state: CardState) -> None:
        """Write a new card's state (and register it for the background loops)."""
        await self._redis.hset(keys.card_state(card_id), mapping={
            "status": state.status, "stock": state.stock, "left": state.left, "limit": state.limit,
            "price": state.price_cents, "starts_ms": state.starts_ms, "ends_ms": state.ends_ms,
            "room": state.room_id, "seq": 0})
        await self._redis.sadd(keys.ACTIVE_CARDS, card_id)

    async def state(self, card_id: str) -> CardState | None:
        vals = await self._redis.hmget(keys.card_state(card_id), STATE_FIELDS)
        return _state(cast(StateFields, vals))

    async def states(self, card_ids: list[str]) -> dict[str, CardState | None]:
        if not card_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for c in card_ids:
            pipe.hmget(keys.card_state(c), STATE_FIELDS)
        replies = cast(list[StateFields], await pipe.execute())
        return {c: _state(v) for c, v in zip(card_ids, replies, strict=True)}

    async def buy_many(self, card_id: str, taps: list[tuple[str, int, str, str]], now_ms: int,
                       pay_by_ms: int) -> list[Result]:
        """Taps on one card, applied in order by one script call: (user, qty, request, order id)."""
        if self.durability is None:
            self.durability = await self.configure_durability(*self._durability)
        args: list[Scalar] = [now_ms, pay_by_ms, self.floors.get(card_id) or 0]
        for tap in taps:
            args.extend(tap)
        # The 7th key is the card's audience gate (fans: followers-only cards).
        buy_keys = [*card_keys(card_id), keys.card_fans(card_id)]
        if not self._wait:
            flat = cast(list[Scalar], await self._s.buy(keys=buy_keys, args=args))
            durable = True
        else:
            # WAIT/WAITAOF count the writes of their own connection: one pipeline, one connection.
            pipe = self._redis.pipeline(transaction=False)
            await self._s.buy(keys=buy_keys, args=args, client=pipe)
            pipe.execute_command(*self._wait)
            flat, acked = cast(tuple[list[Scalar], int | list[int]], await pipe.execute())
            durable = _durable(self._wait, acked)
        self.floors.raise_to(card_id, int(flat[-1]))
        out = [Result(cast(str, flat[i]), _order(cast(str, flat[i + 1])), int(flat[i + 2]))
               for i in range(0, len(flat) - 1, 3)]
        if not durable:
            # The order is taken in Redis but not yet on a replica/disk: not acknowledged. A retry
            # with the same request id finds it (DUP) and waits again.
            out = [Result("NOT_DURABLE", r.order, r.left) if r.code in ("OK", "DUP") else r for r in out]
        return out

    async def configure_durability(self, mode: str, replicas: int, timeout_ms: int) -> str:
        """Set what a buy waits for before it is acknowledged; returns the mode in effect.

        ``disk`` uses WAITAOF (Redis 7.2+). An older Redis has no WAITAOF: with
        ``appendfsync always`` every write is on disk before its reply anyway, so nothing is
        waited for; otherwise the mode cannot be honoured and falls back to ``fast`` (logged).
        """
        self._wait = ()
        if mode == "replica":
            self._wait = ("WAIT", replicas, timeout_ms)
            return mode
        if mode != "disk":
            return "fast"
        if await has_waitaof(self._redis):
            self._wait = ("WAITAOF", 1, 0, timeout_ms)
            return "disk"
        try:
            cfg = cast(dict[str, str], await self._redis.config_get("append*"))
        except Exception:  # CONFIG disabled (managed Redis): cannot tell
            cfg = {}
        if cfg.get("appendonly") == "yes" and cfg.get("appendfsync") == "always":
            return "disk"
        log.warning("order_durability = disk: this Redis has no WAITAOF (7.2+) and does not fsync every "
                    "write (appendfsync always); acknowledging orders as in 'fast' mode")
        return "fast"

    async def fence(self, card_id: str, token: str, now_ms: int, stale_ms: int) -> tuple[str, int, int]:
        code, seq, floor = cast(tuple[str, int, int], await self._s.card_fence(
            keys=[keys.card_state(card_id)], args=[token, now_ms, stale_ms]))
        return code, int(seq), int(floor)

    async def replace(self, card_id: str, token: str, floor: int, data: dict[str, Any]) -> tuple[str, int]:
        k = card_keys(card_id)
        code, seq = cast(tuple[str, int], await self._s.card_rebuild(
            keys=k[:5], args=[token, floor, orjson.dumps(data)]))
        return code, int(seq)

    async def seqs(self, card_ids: list[str]) -> dict[str, tuple[str | None, int, str | None, int]]:
        """Per card: (status, seq, fence, fence_at) as Redis holds them (status None: missing)."""
        if not card_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for c in card_ids:
            pipe.hmget(keys.card_state(c), ("status", "seq", "fence", "fence_at"))
        replies = cast(list[StateFields], await pipe.execute())
        return {c: (v[0], int(v[1] or 0), v[2], int(v[3] or 0)) for c, v in zip(card_ids, replies, strict=True)}

    async def release(self, card_id: str, order_id: str, status: str, now_ms: int, user_id: str = "") -> Result:
        k = card_keys(card_id)
        code, raw, left, card_status = cast(tuple[str, str, int, str], await self._s.release(
            keys=[k[0], k[1], k[3], k[4], k[5]], args=[order_id, status, now_ms, user_id]))
        return Result(code, _order(raw), int(left), card_status)

    async def restock(self, card_id: str, add: int) -> tuple[str, int, int, str]:
        code, left, stock, status = cast(tuple[str, int, int, str], await self._s.restock(
            keys=[keys.card_state(card_id), keys.card_stream(card_id)], args=[add]))
        return code, int(left), int(stock), status

    async def set_status(self, card_id: str, target: str, now_ms: int) -> tuple[str, str]:
        code, status = cast(tuple[str, str], await self._s.card_status(
            keys=[keys.card_state(card_id), keys.card_stream(card_id)], args=[target, now_ms]))
        return code, status

    async def snapshot(self, card_id: str) -> tuple[CardState | None, dict[str, CompactOrder], dict[str, int], int]:
        """State, orders, units per user and stream length, read in one MULTI: a consistent view
        even while buyers buy (for the invariant check)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hmget(keys.card_state(card_id), STATE_FIELDS)
        pipe.hgetall(keys.card_orders(card_id))
        pipe.hgetall(keys.card_bought(card_id))
        pipe.xlen(keys.card_stream(card_id))
        state, orders, bought, backlog = cast(tuple[StateFields, dict[str, str], dict[str, str], int],
                                              await pipe.execute())
        return (_state(state), {k: parse_order(v) for k, v in orders.items()},
                {k: int(v) for k, v in bought.items()}, int(backlog))

    async def order(self, card_id: str, order_id: str) -> CompactOrder | None:
        return _order(cast(str | None, await self._redis.hget(keys.card_orders(card_id), order_id)))

    async def orders(self, card_id: str) -> dict[str, CompactOrder]:
        raw = cast(dict[str, str], await self._redis.hgetall(keys.card_orders(card_id)))
        return {k: parse_order(v) for k, v in raw.items()}

    async def due(self, card_id: str, now_ms: int, limit: int = 500) -> list[str]:
        """Orders of the card whose pay_by has passed."""
        # The client decodes replies (decode_responses=True): str, not bytes.
        return cast(list[str], await self._redis.zrangebyscore(keys.card_deadlines(card_id), "-inf", now_ms,
                                                               start=0, num=limit))

    async def active_cards(self) -> list[str]:
        return list(cast(set[str], await self._redis.smembers(keys.ACTIVE_CARDS)))


async def has_waitaof(redis: aioredis.Redis) -> bool:
    """WAITAOF came with Redis 7.2."""
    info = cast(dict[str, object], await redis.info("server"))
    version = str(info.get("redis_version", "0"))
    return tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) >= (7, 2)


def _durable(wait: tuple[Scalar, ...], acked: int | list[int]) -> bool:
    if wait[0] == "WAITAOF":  # [local fsyncs, replica fsyncs]
        return int(cast(list[int], acked)[0]) >= 1
    return int(cast(int, acked)) >= int(wait[1])  # WAIT: replicas that have the writes


def _state(vals: StateFields) -> CardState | None:
    if not vals or vals[0] is None:
        return None
    status, stock, left, limit, price, starts, ends, room, seq, fence = vals
    # Present whenever status is (init_card writes them together); seq and fence may be missing.
    return CardState(cast(str, status), int(cast(str, stock)), int(cast(str, left)), int(cast(str, limit)),
                     int(cast(str, price)), int(cast(str, starts)), int(cast(str, ends)), room or "",
                     int(seq or 0), fence)


Tap = tuple[str, int, str, str]  # user, qty, request id, order id
Waiter = asyncio.Future[Result] | Callable[[Result | BaseException], None]


class BuyBatcher:
    """Gathers the taps on one card into one script call.

    Under a storm, hundreds of taps share one round trip and one EVALSHA: less Python per tap,
    fewer pool connections, and Redis runs one script instead of hundreds. Batches form by
    themselves: a card's taps go to Redis at once when no call for that card is out (the first
    tap of a quiet card waits for nothing but the end of the current event-loop tick), and while
    one is out they gather and go together the moment it returns — so the busier the card, the
    larger its batches, with no timer and no added wait beyond the call already in flight. A
    batch of ``max_batch`` goes at once even then.
    """

    def __init__(self, inventory: Inventory, pay_window_ms: int, max_batch: int = 256) -> None:
        self._inv = inventory
        self._pay_window_ms = pay_window_ms
        self._max = max_batch
        self._pending: dict[str, list[tuple[Tap, Waiter]]] = {}
        self._out: dict[str, int] = {}  # card -> script calls in flight
        self._tasks: set[asyncio.Task[None]] = set()

    async def buy(self, card_id: str, user_id: str, qty: int, request_id: str, order_id: str) -> Result:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.submit(card_id, user_id, qty, request_id, order_id, fut)
        return await fut

    def submit(self, card_id: str, user_id: str, qty: int, request_id: str, order_id: str,
               waiter: asyncio.Future[Result] | Callable[[Result | BaseException], None]) -> None:
        """Put one tap in its card's next batch; ``waiter`` (a future, or a function called with
        the result or the error) learns how it went."""
        batch = self._pending.get(card_id)
        if batch is None:
            batch = self._pending[card_id] = []
            if card_id not in self._out:
                asyncio.get_running_loop().call_soon(self._flush, card_id)
        batch.append(((user_id, qty, request_id, order_id), waiter))
        if len(batch) >= self._max:
            self._start(card_id)

    def _flush(self, card_id: str) -> None:
        if card_id not in self._out:  # else the call in flight starts this batch as it returns
            self._start(card_id)

    def _start(self, card_id: str) -> None:
        batch = self._pending.pop(card_id, None)
        if not batch:
            return
        self._out[card_id] = self._out.get(card_id, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(card_id, batch))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    def _returned(self, card_id: str) -> None:
        left = self._out.pop(card_id, 0) - 1
        if left > 0:
            self._out[card_id] = left
        else:
            self._start(card_id)  # what gathered meanwhile

    async def _run(self, card_id: str, batch: list[tuple[Tap, Waiter]]) -> None:
        now = now_ms()
        try:
            results = await self._inv.buy_many(card_id, [t for t, _ in batch], now, now + self._pay_window_ms)
        except BaseException as e:
            self._returned(card_id)
            err = e if isinstance(e, Exception) else RuntimeError("cancelled")
            for _, waiter in batch:
                _tell(waiter, err)
            if not isinstance(e, Exception):
                raise
            return
        self._returned(card_id)
        for (_, waiter), res in zip(batch, results, strict=True):
            _tell(waiter, res)


def _tell(waiter: Waiter, outcome: Result | BaseException) -> None:
    if isinstance(waiter, asyncio.Future):
        if not waiter.done():
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        return
    try:
        waiter(outcome)
    except Exception:  # one tap's bad callback never keeps the rest of its batch waiting
        log.exception("a buy's callback failed")
