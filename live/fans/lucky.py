"""Lucky bags (福袋): open with a committed seed, enter once, draw exactly once, reveal.

Opening stores the bag in SQL (with its secret seed) and in Redis (status and end, for the
atomic entry script), and publishes ``commitment = SHA-256(seed)``. Entries are one Lua step
(``lucky_enter.lua``: open and before the end, then SADD: once per user). At the end any
process may draw: it closes the bag in Redis (``lucky_close.lua``: no entry after, the same
entrant set for everyone), keeps the entrants that still meet the condition, computes the
winners with :func:`live.fans.draw.draw_winners`, and writes the result with one conditional
UPDATE (``status = 'open'`` → ``'drawn'``) in the same transaction as the prize orders: when
two processes draw at once, exactly one UPDATE matches, the other rolls back.

Prizes: a closed card (``audience = 'lucky_bag'``, price 0, stock = number of winners, never on
sale, not listed in the room) and one ``paid`` order of ``0.00`` per winner, so the stock
invariant holds for it like for any card (left 0 + winners' units = stock).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from live.core import keys
from live.core.auth import Principal
from live.core.errors import Conflict, Forbidden, Invalid, NotEligible, NotFound, log_loop_error
from live.core.ids import aware, iso, new_id, now_ms, utcnow
from live.core.models import Card, LuckyBag, Order, User
from live.fans.draw import commitment, draw_winners
from live.fans.follows import FollowService, chunks

log = logging.getLogger(__name__)
CONDITIONS = ("present", "follower", "keyword")
SQL_SWEEP_TICKS = 20  # every 20 draw-loop ticks (~5 s) SQL is asked too, in case Redis lost the due set
DONE_TTL_S = 86400  # a drawn bag's Redis keys linger a day (late entries get CLOSED, not NOT_FOUND)
ENTER_RATE_PER_S, ENTER_BURST = 2.0, 10  # entry taps per user: a bot hammering gets RATE_LIMITED


def prize_order_id(card_id: str, bag_id: str, user_id: str) -> str:
    """Deterministic, so a redrawn (crashed, retried) bag can never give a winner two orders."""
    return f"{card_id}-{hashlib.sha256(f'{bag_id}:{user_id}'.encode()).hexdigest()[:12]}"


class _AlreadyDrawn(Exception):
    pass


class LuckyService:
    def __init__(self, svc: Any, follows: FollowService) -> None:
        self.svc = svc
        self._follows = follows
        self._guests: dict[str, bool] = {}
        self._bags: dict[str, LuckyBag] = {}  # open bags' immutable fields, by id

    # --- opening ---------------------------------------------------------------------------------
    async def open(self, who: Principal, room_id: str, *, title: str, prize: str, winners: int, duration_s: float,
                   condition: str, keyword: str | None, allow_guests: bool) -> dict[str, Any]:
        s = self.svc.settings
        room = await self.svc.rooms.get(room_id)
        if room.streamer_id != who.id:
            raise Forbidden("not your room")
        if room.status == "ended":
            raise Conflict("room has ended")
        if condition not in CONDITIONS:
            raise Invalid(f"condition: one of {', '.join(CONDITIONS)}")
        if not 1 <= winners <= s.lucky_max_winners:
            raise Invalid(f"winners: an integer from 1 to {s.lucky_max_winners}")
        if not s.lucky_min_duration_s <= duration_s <= s.lucky_max_duration_s:
            raise Invalid(f"duration_s: from {s.lucky_min_duration_s} to {s.lucky_max_duration_s} seconds")
        if condition == "keyword":
            if not keyword:
                raise Invalid("keyword: required when condition is keyword")
        else:
            keyword = None
        chat = self.svc.chat
        for text in (title, prize, keyword or ""):
            if text and chat is not None:
                await chat.vet(who, text, kind="card", room_id=room_id)
        seed = secrets.token_hex(32)
        now = utcnow()
        ends = now + timedelta(seconds=duration_s)
        bag = LuckyBag(id=new_id(), room_id=room_id, streamer_id=who.id, title=title, prize=prize or title,
                       winners=winners, condition=condition, keyword=keyword, allow_guests=allow_guests, seed=seed,
                       commitment=commitment(seed), status="open", ends_at=ends, created_at=now)
        async with self.svc.db() as sess, sess.begin():
            sess.add(bag)
        ends_ms = int(ends.timestamp() * 1000)
        await self.svc.redis.hset(keys.bag_state(bag.id), mapping={"status": "open", "ends_ms": ends_ms})
        if keyword:
            await self.svc.redis.hset(keys.room_open_bags(room_id), bag.id, keyword)
        await self.svc.redis.zadd(keys.BAGS_DUE, {bag.id: ends_ms})
        view = self.view(bag)
        await self.svc.pusher.to_room(room_id, "lucky:open", view)
        return view

    def view(self, bag: LuckyBag) -> dict[str, Any]:
        """The contract's bag: the seed only once drawn; ``winners`` is the number while open
        and the winners' ids once drawn (``winners_count`` is always the number)."""
        out: dict[str, Any] = {
            "id": bag.id, "room_id": bag.room_id, "title": bag.title, "prize": bag.prize,
            "winners": bag.winners, "winners_count": bag.winners, "ends_at": iso(bag.ends_at),
            "condition": bag.condition, "keyword": bag.keyword, "allow_guests": bag.allow_guests,
            "commitment": bag.commitment, "status": bag.status, "created_at": iso(bag.created_at),
        }
        if bag.status == "drawn":
            out.update(seed=bag.seed, entrants=bag.entrants or [], winners=bag.winner_ids or [],
                       drawn_at=iso(bag.drawn_at), prize_card_id=bag.prize_card_id)
        return out

    async def get(self, bag_id: str) -> dict[str, Any]:
        async with self.svc.db() as s:
            bag = await s.get(LuckyBag, bag_id)
        if bag is None:
            raise NotFound("no such lucky bag")
        out = self.view(bag)
        if bag.status == "open":
            out["entries"] = int(await self.svc.redis.scard(keys.bag_entrants(bag_id)))
        return out

    async def of_room(self, room_id: str) -> list[dict[str, Any]]:
        async with self.svc.db() as s:
            bags = list((await s.execute(select(LuckyBag).where(LuckyBag.room_id == room_id)
                                         .order_by(LuckyBag.created_at.desc()).limit(20))).scalars())
        return [self.view(b) for b in bags]

    # --- entering -------------------------------------------------------------------------------
    async def _bag(self, bag_id: str) -> LuckyBag:
        bag = self._bags.get(bag_id)
        if bag is None:
            async with self.svc.db() as s:
                bag = await s.get(LuckyBag, bag_id)
            if bag is None:
                raise NotFound("no such lucky bag")
            if len(self._bags) > 10_000:
                self._bags.clear()
            self._bags[bag_id] = bag
        return bag

    async def _is_guest(self, user_id: str) -> bool:
        guest = self._guests.get(user_id)
        if guest is None:
            async with self.svc.db() as s:
                user = await s.get(User, user_id)
            guest = user is None or user.username is None
            if len(self._guests) > 100_000:
                self._guests.clear()
            self._guests[user_id] = guest
        return guest

    async def enter(self, who: Principal, bag_id: str, *, by_keyword: bool = False) -> dict[str, Any]:
        """Enter once; ``{"bag_id","entered":true,"already":bool}`` or NOT_ELIGIBLE / CONFLICT."""
        if not by_keyword:  # (chat has its own rate limit)
            await self.svc.ratelimit.take(who.id, "lucky", ENTER_RATE_PER_S, ENTER_BURST)
        bag = await self._bag(bag_id)
        if bag.condition == "keyword" and not by_keyword:
            raise Invalid("send the keyword in the room's chat to enter this lucky bag")
        if who.id == bag.streamer_id:
            raise NotEligible("the streamer cannot enter its own lucky bag")
        if not bag.allow_guests and await self._is_guest(who.id):
            raise NotEligible("sign in to enter: guests cannot enter this lucky bag")
        if bag.condition == "follower" and not await self._follows.is_follower(who.id, bag.streamer_id):
            raise NotEligible("follow the streamer to enter this lucky bag")
        if bag.condition == "present" and not await self.svc.redis.hexists(keys.room_users(bag.room_id), who.id):
            raise NotEligible("join the room to enter this lucky bag")
        code = await self.svc.scripts.lucky_enter(keys=[keys.bag_state(bag_id), keys.bag_entrants(bag_id)],
                                                  args=[who.id, now_ms()])
        if code == "CLOSED":
            raise Conflict("this lucky bag has closed")
        if code == "NOT_FOUND":
            raise Conflict("this lucky bag is not open")
        return {"bag_id": bag_id, "entered": True, "already": code == "DUP"}

    async def on_chat(self, room_id: str, who: Principal, text: str) -> None:
        """``chat`` hook: a message that is exactly a keyword bag's keyword enters it."""
        bags = await self.svc.redis.hgetall(keys.room_open_bags(room_id))
        for bag_id, keyword in bags.items():
            if text.strip().casefold() == keyword.strip().casefold():
                try:
                    result = await self.enter(who, bag_id, by_keyword=True)
                    await self.svc.pusher.to_user(who.id, "lucky:entered", result)
                except (NotEligible, Conflict, NotFound) as e:
                    await self.svc.pusher.to_user(who.id, "lucky:refused", {"bag_id": bag_id, "error": e.to_dict()})

    # --- drawing --------------------------------------------------------------------------------
    async def draw_loop(self, stop: asyncio.Event) -> None:
        """Every process looks for bags past their end; the SQL update decides who draws."""
        tick = 0
        while not stop.is_set():
            try:
                due = list(await self.svc.redis.zrangebyscore(keys.BAGS_DUE, "-inf", now_ms(), start=0, num=20))
                if tick % SQL_SWEEP_TICKS == 0:
                    due += await self._overdue_in_sql()
                for bag_id in dict.fromkeys(due):
                    await self.draw(bag_id)
            except Exception as e:
                log_loop_error(log, "lucky bag draw failed", e)
            tick += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    async def _overdue_in_sql(self) -> list[str]:
        """Open bags past their end that the due set does not hold (Redis lost it): drawn too."""
        async with self.svc.db() as s:
            return list((await s.execute(select(LuckyBag.id).where(
                LuckyBag.status == "open", LuckyBag.ends_at < utcnow() - timedelta(seconds=2)).limit(20))).scalars())

    async def _eligible(self, bag: LuckyBag, entrants: list[str]) -> list[str]:
        """The entrants that still meet the condition at the draw."""
        if bag.condition == "follower":
            return sorted(await self._follows.followers_among(bag.streamer_id, entrants))
        if bag.condition == "present":
            kept: list[str] = []
            for part in chunks(sorted(entrants)):
                counts = await self.svc.redis.hmget(keys.room_users(bag.room_id), part)
                kept += [u for u, n in zip(part, counts, strict=True) if n and int(n) > 0]
            return sorted(kept)
        return sorted(entrants)

    async def draw(self, bag_id: str) -> bool:
        """Draw the bag if it is still open; True if this call drew it."""
        async with self.svc.db() as s:
            bag = await s.get(LuckyBag, bag_id)
        if bag is None or bag.status != "open":
            await self.svc.redis.zrem(keys.BAGS_DUE, bag_id)
            return False
        if aware(bag.ends_at) > utcnow():
            return False  # never before its end, whoever asks
        raw = await self.svc.scripts.lucky_close(keys=[keys.bag_state(bag_id), keys.bag_entrants(bag_id)])
        entrants = await self._eligible(bag, list(raw or []))
        winners = draw_winners(bag.seed, entrants, bag.winners)
        now = utcnow()
        card_id = new_id() if winners else None
        try:
            await self._record(bag, now, entrants, winners, card_id)
        except _AlreadyDrawn:
            return False
        pipe = self.svc.redis.pipeline(transaction=False)
        pipe.zrem(keys.BAGS_DUE, bag_id)
        pipe.hdel(keys.room_open_bags(bag.room_id), bag_id)
        pipe.expire(keys.bag_state(bag_id), DONE_TTL_S)
        pipe.expire(keys.bag_entrants(bag_id), DONE_TTL_S)
        await pipe.execute()
        self._bags.pop(bag_id, None)
        bag.status, bag.drawn_at, bag.entrants, bag.winner_ids, bag.prize_card_id = (
            "drawn", now, entrants, winners, card_id)
        await self.svc.pusher.to_room(bag.room_id, "lucky:drawn", self.view(bag))
        if card_id is not None:
            for user_id in winners:
                await self.svc.pusher.to_user(user_id, "order:update", {
                    "id": prize_order_id(card_id, bag_id, user_id), "card_id": card_id, "user_id": user_id,
                    "qty": 1, "amount": "0.00", "status": "paid", "created_at": iso(now), "pay_by": iso(now),
                    "request_id": f"lucky:{bag_id}"})
        return True

    async def _record(self, bag: LuckyBag, now: datetime, entrants: list[str], winners: list[str],
                      card_id: str | None) -> None:
        """The draw's result and the prize orders in one transaction, if the bag is still open."""
        async with self.svc.db() as s, s.begin():
            claimed = (await s.execute(
                update(LuckyBag).where(LuckyBag.id == bag.id, LuckyBag.status == "open")
                .values(status="drawn", drawn_at=now, entrants=entrants, winner_ids=winners, prize_card_id=card_id)
                .returning(LuckyBag.id))).first()
            if claimed is None:
                raise _AlreadyDrawn  # another process drew it first: roll back, nothing of ours stays
            if card_id is None:
                return
            s.add(Card(id=card_id, room_id=bag.room_id, title=bag.prize[:120], code="", image_key="",
                       price_cents=0, stock=len(winners), restocked=0, limit_per_user=1, status="closed",
                       starts_at=now, ends_at=now, created_at=now, audience="lucky_bag"))
            await s.flush()  # the card before the orders that reference it
            s.add_all([Order(id=prize_order_id(card_id, bag.id, user_id), card_id=card_id, room_id=bag.room_id,
                             user_id=user_id, request_id=f"lucky:{bag.id}", qty=1, amount_cents=0, status="paid",
                             created_at=now, pay_by=now, updated_at=now) for user_id in winners])
