"""A card's stock in Redis: every change is one Lua script over keys of one hash tag.

This module only speaks Redis; ``live.commerce.flashbuy`` and ``live.commerce.orders`` hold the rules around it.
Orders are kept as small JSON objects in the card's orders hash (``u`` user, ``q`` qty,
``s`` status, ``c`` created ms, ``p`` pay_by ms, ``r`` request id, ``a`` amount cents).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from live.core import keys
from live.core.ids import now_ms
from live.core.scripts import Scripts

SCRIPTS = ["buy", "release", "pay", "restock", "card_status"]
STATE_FIELDS = ("status", "stock", "left", "limit", "price", "starts_ms", "ends_ms", "room")


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

    @property
    def sold(self) -> int:
        return self.stock - self.left


@dataclass(frozen=True, slots=True)
class Result:
    code: str
    order: dict[str, Any] | None
    left: int
    status: str = ""


def _order(raw: str | bytes | None) -> dict[str, Any] | None:
    return orjson.loads(raw) if raw else None


def card_keys(card_id: str) -> list[str]:
    return [keys.card_state(card_id), keys.card_bought(card_id), keys.card_requests(card_id),
            keys.card_orders(card_id), keys.card_deadlines(card_id), keys.card_stream(card_id)]


class Inventory:
    def __init__(self, redis: aioredis.Redis, scripts: Scripts) -> None:
        self._redis = redis
        self._s = scripts

    async def init_card(self, card_id: str, state: CardState) -> None:
        """Write a new card's state (and register it for the background loops)."""
        await self._redis.hset(keys.card_state(card_id), mapping={
            "status": state.status, "stock": state.stock, "left": state.left, "limit": state.limit,
            "price": state.price_cents, "starts_ms": state.starts_ms, "ends_ms": state.ends_ms,
            "room": state.room_id})
        await self._redis.sadd(keys.ACTIVE_CARDS, card_id)

    async def state(self, card_id: str) -> CardState | None:
        vals = await self._redis.hmget(keys.card_state(card_id), STATE_FIELDS)
        return _state(vals)

    async def states(self, card_ids: list[str]) -> dict[str, CardState | None]:
        if not card_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for c in card_ids:
            pipe.hmget(keys.card_state(c), STATE_FIELDS)
        return {c: _state(v) for c, v in zip(card_ids, await pipe.execute(), strict=True)}

    async def buy_many(self, card_id: str, taps: list[tuple[str, int, str, str]], now_ms: int,
                       pay_by_ms: int) -> list[Result]:
        """Taps on one card, applied in order by one script call: (user, qty, request, order id)."""
        args: list[Any] = [now_ms, pay_by_ms]
        for tap in taps:
            args.extend(tap)
        # The 7th key is the card's audience gate (fans: followers-only cards).
        flat = await self._s.buy(keys=[*card_keys(card_id), keys.card_fans(card_id)], args=args)
        return [Result(flat[i], _order(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def release(self, card_id: str, order_id: str, status: str, now_ms: int, user_id: str = "") -> Result:
        k = card_keys(card_id)
        code, raw, left, card_status = await self._s.release(
            keys=[k[0], k[1], k[3], k[4], k[5]], args=[order_id, status, now_ms, user_id])
        return Result(code, _order(raw), int(left), card_status)

    async def pay(self, card_id: str, order_id: str, user_id: str, now_ms: int) -> Result:
        k = card_keys(card_id)
        code, raw = await self._s.pay(keys=[k[3], k[4], k[5]], args=[order_id, user_id, now_ms])
        return Result(code, _order(raw), 0)

    async def restock(self, card_id: str, add: int) -> tuple[str, int, int, str]:
        code, left, stock, status = await self._s.restock(
            keys=[keys.card_state(card_id), keys.card_stream(card_id)], args=[add])
        return code, int(left), int(stock), status

    async def set_status(self, card_id: str, target: str, now_ms: int) -> tuple[str, str]:
        code, status = await self._s.card_status(
            keys=[keys.card_state(card_id), keys.card_stream(card_id)], args=[target, now_ms])
        return code, status

    async def order(self, card_id: str, order_id: str) -> dict[str, Any] | None:
        return _order(await self._redis.hget(keys.card_orders(card_id), order_id))

    async def orders(self, card_id: str) -> dict[str, dict[str, Any]]:
        raw = cast(dict[str, str], await self._redis.hgetall(keys.card_orders(card_id)))
        return {k: orjson.loads(v) for k, v in raw.items()}

    async def due(self, card_id: str, now_ms: int, limit: int = 500) -> list[str]:
        """Orders of the card whose pay_by has passed."""
        # The client decodes replies (decode_responses=True): str, not bytes.
        return cast(list[str], await self._redis.zrangebyscore(keys.card_deadlines(card_id), "-inf", now_ms,
                                                               start=0, num=limit))

    async def active_cards(self) -> list[str]:
        return list(cast(set[str], await self._redis.smembers(keys.ACTIVE_CARDS)))


def _state(vals: list[Any]) -> CardState | None:
    if not vals or vals[0] is None:
        return None
    status, stock, left, limit, price, starts, ends, room = vals
    return CardState(status, int(stock), int(left), int(limit), int(price), int(starts), int(ends), room or "")


class BuyBatcher:
    """Gathers the taps on one card that arrive in the same event-loop tick into one script call.

    Under a storm, hundreds of taps share one round trip and one EVALSHA: less Python per tap,
    fewer pool connections, and Redis runs one script instead of hundreds.
    """

    def __init__(self, inventory: Inventory, pay_window_ms: int, max_batch: int = 256) -> None:
        self._inv = inventory
        self._pay_window_ms = pay_window_ms
        self._max = max_batch
        self._pending: dict[str, list[tuple[tuple[str, int, str, str], asyncio.Future[Result]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def buy(self, card_id: str, user_id: str, qty: int, request_id: str, order_id: str) -> Result:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        batch = self._pending.get(card_id)
        if batch is None:
            batch = self._pending[card_id] = []
            loop.call_soon(self._flush, card_id)
        batch.append(((user_id, qty, request_id, order_id), fut))
        if len(batch) >= self._max:
            self._flush(card_id)
        return await fut

    def _flush(self, card_id: str) -> None:
        batch = self._pending.pop(card_id, None)
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._run(card_id, batch))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    async def _run(self, card_id: str, batch: list[tuple[tuple[str, int, str, str], asyncio.Future[Result]]]) -> None:
        now = now_ms()
        try:
            results = await self._inv.buy_many(card_id, [t for t, _ in batch], now, now + self._pay_window_ms)
        except BaseException as e:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else RuntimeError("cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        for (_, fut), res in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(res)
