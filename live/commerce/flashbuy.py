"""Flash-buy (闪电购): put a product on air and sell it to a buy storm without overselling.

The rules of a sale live here; the atomic stock work is in ``live.commerce.inventory`` (Lua), the
order lifecycle and its durability in ``live.commerce.orders``.

Hot path of a tap: local checks (known sold-out, rate) → one Lua script in Redis (which
checks sale window, idempotency, limit and stock before it writes, and appends the order to
the card's stream) → ack. SQL is written behind, by the persister, from that stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from live.commerce.inventory import SCRIPTS as SCRIPTS  # the domain's Lua: its Redis side's, listed there
from live.commerce.inventory import BuyBatcher, CardState, Inventory, Result
from live.commerce.views import FENCED_MESSAGE, money, order_view
from live.core import keys
from live.core.auth import Principal
from live.core.errors import (
    Blocked,
    Conflict,
    Forbidden,
    Invalid,
    LimitExceeded,
    NotEligible,
    NotFound,
    NotOnSale,
    RateLimited,
    SoldOut,
    Unavailable,
    log_loop_error,
)
from live.core.ids import RANDOM, iso, new_id, now_ms, utcnow
from live.core.models import Card, Room
from live.media.images import ImagePipeline
from live.media.ocr import FrameSampler, TextReader
from live.media.qr import find_qr_codes
from live.media.storage import LocalStorage

if TYPE_CHECKING:
    from live.app.services import Services
    from live.commerce.orders import OrderService
    from live.media.rtc import MediaService

log = logging.getLogger(__name__)

# What buy_now hands a tap's outcome to: the ack, or the error to answer with.
Reply = Callable[[dict[str, Any] | BaseException], None]


def cents(price: Decimal) -> int:
    return int((price * 100).to_integral_value())


class LocalBuckets:
    """Per-user token buckets in this process's memory: a tap storm is throttled without a
    Redis round trip. Bounded (least recently used users are forgotten)."""

    def __init__(self, rate: float, burst: int, max_users: int = 200_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_users = max_users
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, user_id: str) -> bool:
        now = time.monotonic()
        tokens, ts = self._b.pop(user_id, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - ts) * self.rate)
        ok = tokens >= 1
        self._b[user_id] = (tokens - 1 if ok else tokens, now)
        if len(self._b) > self.max_users:
            self._b.popitem(last=False)
        return ok


class FlashService:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.inventory = Inventory(svc.redis, svc.scripts, (svc.settings.order_durability,
                                                            svc.settings.order_durability_replicas,
                                                            svc.settings.order_durability_timeout_ms))
        self.batcher = BuyBatcher(self.inventory, int(svc.settings.payment_timeout_s * 1000))
        self.images = ImagePipeline(max_bytes=svc.settings.max_upload_bytes,
                                    max_pixels=svc.settings.max_image_pixels,
                                    display_px=svc.settings.image_display_px,
                                    thumb_px=svc.settings.image_thumb_px)
        self.storage = LocalStorage(svc.settings.data_dir / "media")
        # Text in product photos (and sampled video frames) goes through the guard too.
        self.text_reader = TextReader(max_side_px=svc.settings.ocr_max_side_px) if svc.settings.ocr_enabled else None
        self.buckets = LocalBuckets(svc.settings.buy_rate_per_s, svc.settings.buy_rate_burst)
        # Fast reject: cards known (from any process, via the bus) to be sold out or closed.
        self.unavailable: dict[str, str] = {}
        # Cards whose stock changed on this process since the last coalesced push.
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._card_rooms: dict[str, str] = {}
        self._room_lookups: dict[str, asyncio.Future[str]] = {}
        self._floor_lookups: dict[str, asyncio.Future[int | None]] = {}
        self._room_cards: dict[str, tuple[str, list[Card]]] = {}
        self._outcomes: dict[str, Any] = {}  # buy outcome -> metric child  # room -> (version, card rows)
        # Recently accepted taps on this process: (card, user, request) → ack, bounded.
        # Acks kept as JSON bytes: 200,000 of them as dicts were ~400,000 objects for Python's
        # garbage collector to walk on every full collection.
        self._accepted: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._replying: set[asyncio.Future[dict[str, Any]]] = set()  # buy_now's tasks, until they reply
        self.orders: OrderService  # set by install()

    # --- listing --------------------------------------------------------------------------
    async def create_card(self, who: Principal, room_id: str, *, price: Decimal, stock: int,
                          image: bytes | None, snapshot: bool, title: str = "", code: str = "",
                          limit_per_user: int | None = None, starts_at: datetime | None = None,
                          duration_s: int | None = None, audience: str = "all") -> dict[str, Any]:
        room = await self.svc.rooms.get(room_id)
        if room.streamer_id != who.id:
            raise Forbidden("not your room")
        if room.status == "ended":
            raise Conflict("room has ended")
        if await self.svc.redis.exists(keys.user_listing_ban(who.id)):
            raise Forbidden("listing is suspended for this account")
        if self.svc.governance is not None:  # admission and restrictions (scheduled: a later start)
            await self.svc.governance.require(who.id, "scheduled_sale" if starts_at and starts_at.timestamp()
                                              > utcnow().timestamp() + 0.5 else "listing")
        if price <= 0 or price > self.settings.max_price or price.as_tuple().exponent < -2:  # type: ignore[operator]
            raise Invalid(f"price: more than 0, at most {self.settings.max_price}, at most 2 decimals")
        if not 1 <= stock <= self.settings.max_stock:
            raise Invalid(f"stock: an integer from 1 to {self.settings.max_stock}")
        limit = limit_per_user or self.settings.default_limit_per_user
        fans = getattr(self.svc, "fans", None)  # None when the fans domain is not installed
        if audience not in ("all", "followers") or (audience == "followers" and fans is None):
            raise Invalid("audience: all or followers")
        chat = self.svc.chat
        for text in (title, code):
            if text and chat is not None:
                await chat.vet(who, text, kind="card", room_id=room_id)  # BLOCKED + a violation
        if snapshot:
            media = self.svc.media
            # JPEG-encoding a 720p frame takes milliseconds: off the event loop.
            frame = await asyncio.to_thread(media.latest_jpeg, room_id) if media is not None else None
            if frame is None:
                raise Conflict("no live video frame to take a snapshot from: go live with video first, "
                               "or upload a photo")
            image = frame
        if image is None:
            raise Invalid("image: upload a photo (JPEG/PNG/WebP) or set \"snapshot\": true")
        processed = await asyncio.to_thread(self.images.process, image)
        await self._refuse_qr(processed.display, who, room_id)
        await self._refuse_text_in_photo(processed.display, who, room_id)
        now = utcnow()
        start = starts_at or now
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        if start < now:
            start = now
        ends = start + timedelta(seconds=duration_s) if duration_s else None
        card_id = new_id()
        image_key = f"{card_id}"
        await self.storage.put(f"{image_key}.jpg", processed.display)
        await self.storage.put(f"{image_key}-thumb.jpg", processed.thumb)
        status = "scheduled" if start > now + timedelta(milliseconds=500) else "on_sale"
        card = Card(id=card_id, room_id=room_id, title=title, code=code, image_key=image_key,
                    price_cents=cents(price), stock=stock, restocked=0, limit_per_user=limit, status=status,
                    starts_at=start, ends_at=ends, created_at=now, audience=audience)
        state = CardState(status, stock, stock, limit, card.price_cents, int(start.timestamp() * 1000),
                          int(ends.timestamp() * 1000) if ends else 0, room_id)
        async with self.svc.db() as s, s.begin():
            s.add(card)
            r = await s.get(Room, room_id)
            if r is not None:
                r.pinned_card_id = card_id  # the newest card is pinned
            # Redis first, inside the transaction: no process ever sees the card in SQL without
            # its Redis state (the fence check would take it for lost and rebuild it); a
            # followers-only card is gated before it is buyable.
            if audience == "followers":
                await self.svc.fans.gate_card(card_id, who.id)
            await self.inventory.init_card(card_id, state)
        await self.svc.rooms.touch(room_id)
        view = self.view(card, state)
        await self.svc.pusher.to_room(room_id, "flash:card", view)
        return view

    async def _refuse_qr(self, image: bytes, who: Principal, room_id: str) -> None:
        """A QR code (or another 2-D code) in a product photo steers buyers off the platform: refused.
        Ordinary retail barcodes on product boxes are allowed."""
        found = await asyncio.to_thread(find_qr_codes, image)
        if found:
            self.svc.metrics.blocked.labels("image", "private_trading").inc()
            moderation = getattr(self.svc, "moderation", None)  # set only when the chat domain is installed
            if moderation is not None:
                await moderation.violation(who.id, kind="image", reason="private_trading", detector="qr",
                                           text=found[0][:200], room_id=room_id, fragment=found[0][:200])
            raise Blocked("product photos must not carry QR codes", reason="private_trading",
                          detail="qr_code")

    async def _refuse_text_in_photo(self, image: bytes, who: Principal, room_id: str) -> None:
        """A contact written into a product photo (a phone number, a WeChat id) is refused like
        one typed in chat. Only a certain verdict refuses: photos carry brand names and sizes."""
        if self.text_reader is None or self.svc.guard is None:
            return
        found = await self.text_reader.read(image)
        verdict = self.svc.guard.verdict(found.text) if found.lines else None
        finding = verdict.finding if verdict is not None and verdict.action == "block" else None
        if finding is None:
            return
        self.svc.metrics.blocked.labels("image", finding.reason).inc()
        if self.svc.moderation is not None:
            await self.svc.moderation.violation(who.id, kind="image", reason=finding.reason, detector=finding.kind,
                                                text=found.text[:200], room_id=room_id, fragment=finding.match)
        raise Blocked("product photos must not carry contact details", reason=finding.reason,
                      detail="text_in_image")

    def view(self, card: Card, state: CardState | None) -> dict[str, Any]:
        """The contract's card object; live numbers come from Redis when it has them."""
        stock = state.stock if state else card.stock + card.restocked
        left = state.left if state else 0
        return {
            "id": card.id,
            "room_id": card.room_id,
            "title": card.title,
            "code": card.code,
            "image_url": self.storage.url(f"{card.image_key}.jpg"),
            "thumb_url": self.storage.url(f"{card.image_key}-thumb.jpg"),
            "price": money(card.price_cents),
            "stock": stock,
            "left": left,
            "sold": stock - left,
            "limit_per_user": card.limit_per_user,
            "status": self._status(state.status if state else card.status, state),
            "starts_at": iso(card.starts_at),
            "ends_at": iso(card.ends_at),
            "audience": card.audience or "all",
        }

    @staticmethod
    def _status(status: str, state: CardState | None) -> str:
        # The stored status lags the clock by up to one scheduler tick; show what buying would do.
        if state is None or status in ("closed",):
            return status
        now = now_ms()
        if state.ends_ms and now >= state.ends_ms:
            return "closed"
        if status == "scheduled" and now >= state.starts_ms:
            return "on_sale" if state.left > 0 else "sold_out"
        return status

    async def _card_row(self, card_id: str) -> Card:
        async with self.svc.db() as s:
            card = await s.get(Card, card_id)
        if card is None:
            raise NotFound("no such card")
        return card

    async def card(self, card_id: str) -> dict[str, Any]:
        card = await self._card_row(card_id)
        return self.view(card, await self.inventory.state(card_id))

    async def room_cards(self, room_id: str, version: str | None = None) -> list[dict[str, Any]]:
        """The room's cards with live numbers; the SQL rows are cached per room version."""
        cached = self._room_cards.get(room_id)
        if version is not None and cached is not None and cached[0] == version:
            cards = cached[1]
        else:
            async with self.svc.db() as s:
                cards = list((await s.execute(
                    select(Card).where(Card.room_id == room_id, Card.audience != "lucky_bag")  # not prizes
                    .order_by(Card.created_at))).scalars())
            if version is not None:
                if len(self._room_cards) > 10_000:
                    self._room_cards.clear()
                self._room_cards[room_id] = (version, cards)
        states = await self.inventory.states([c.id for c in cards])
        return [self.view(c, states.get(c.id)) for c in cards]

    async def owned(self, who: Principal, card_id: str) -> Card:
        card = await self._card_row(card_id)
        room = await self.svc.rooms.get(card.room_id)
        if room.streamer_id != who.id:
            raise Forbidden("not your card")
        return card

    async def pin(self, who: Principal, card_id: str) -> dict[str, Any]:
        card = await self.owned(who, card_id)
        await self.svc.rooms.set_pinned(card.room_id, card.id)
        view = self.view(card, await self.inventory.state(card_id))
        await self.svc.pusher.to_room(card.room_id, "flash:pin", {"room_id": card.room_id, "card_id": card.id,
                                                                  "card": view})
        return view

    async def close(self, who: Principal, card_id: str) -> dict[str, Any]:
        card = await self.owned(who, card_id)
        code, _ = await self.inventory.set_status(card_id, "closed", now_ms())
        if code in ("NOT_FOUND", "FENCED"):
            await self.orders.rebuild(card_id)
            code, _ = await self.inventory.set_status(card_id, "closed", now_ms())
        if code == "FENCED":
            raise Unavailable(FENCED_MESSAGE)
        if code == "OK":
            await self.status_changed(card.room_id, card_id, "closed")
        return await self.card(card_id)

    async def restock(self, who: Principal, card_id: str, add: int) -> dict[str, Any]:
        card = await self.owned(who, card_id)
        if not 1 <= add <= self.settings.max_stock:
            raise Invalid(f"add: an integer from 1 to {self.settings.max_stock}")
        code, _, _, status = await self.inventory.restock(card_id, add)
        if code in ("NOT_FOUND", "FENCED"):
            await self.orders.rebuild(card_id)
            code, _, _, status = await self.inventory.restock(card_id, add)
        if code == "FENCED":
            raise Unavailable(FENCED_MESSAGE)
        if code == "CLOSED":
            raise Conflict("the sale is closed")
        await self.status_changed(card.room_id, card_id, status)
        self.mark_dirty(card_id, card.room_id)
        return await self.card(card_id)

    # --- buying ------------------------------------------------------------------------------
    async def buy(self, who: Principal, card_id: str, qty: int, request_id: str) -> dict[str, Any]:
        """Take stock for one tap. Returns ``{"order", "left"}`` or raises the contract's error."""
        prior = self._admit(who, card_id, qty, request_id)
        if prior is not None:
            return prior
        return await self._take(who, card_id, qty, request_id, None)

    def buy_now(self, who: Principal, card_id: str, qty: int, request_id: str, reply: Reply) -> None:
        """:meth:`buy` without a task of its own, for the socket's short path: ``reply`` gets the
        ack (or the error) — at once when no Redis call is needed, else as the card's batch
        returns. Whatever must be waited for beyond that (this process's first tap on a card
        loads its seq floor; a lost or fenced card is rebuilt and tried again; a room lookup, the
        sold-out push) goes on in a task running the same steps as :meth:`buy`."""
        try:
            prior = self._admit(who, card_id, qty, request_id)
        except Exception as e:
            reply(e)
            return
        if prior is not None:
            reply(prior)
            return
        if self.inventory.floors.get(card_id) is None:
            self._spawn(self._take(who, card_id, qty, request_id, None), reply)
            return

        def landed(res: Result | BaseException) -> None:
            if isinstance(res, BaseException):
                if isinstance(res, RedisConnectionError):
                    self.orders.redis_trouble()
                reply(res)
                return
            try:
                ack = self._settle_now(who, card_id, request_id, res)
            except Exception as e:
                reply(e)
                return
            if ack is None:
                self._spawn(self._take(who, card_id, qty, request_id, res), reply)
            else:
                reply(ack)

        self.batcher.submit(card_id, who.id, qty, request_id, self._order_id(card_id), landed)

    def _spawn(self, work: Coroutine[Any, Any, dict[str, Any]], reply: Reply) -> None:
        task = asyncio.ensure_future(work)
        self._replying.add(task)

        def done(t: asyncio.Future[dict[str, Any]]) -> None:
            self._replying.discard(t)
            if t.cancelled():
                reply(Unavailable("the server is shutting down; retry with the same request_id"))
            else:
                exc = t.exception()
                reply(exc if exc is not None else t.result())

        task.add_done_callback(done)

    def _order_id(self, card_id: str) -> str:
        return f"{card_id}-{RANDOM.take(12)}"

    def _admit(self, who: Principal, card_id: str, qty: int, request_id: str) -> dict[str, Any] | None:
        """What a tap is refused before it goes to Redis (the contract's error, raised), or the
        ack of a retried request this process already accepted; None: on to Redis."""
        if not 1 <= qty <= self.settings.max_qty_per_buy:
            raise Invalid(f"qty: an integer from 1 to {self.settings.max_qty_per_buy}")
        known = self.unavailable.get(card_id)
        if known is not None:
            # A retry of a request this process already accepted still gets its order.
            prior = self._accepted.get((card_id, who.id, request_id))
            if prior is not None:
                return cast(dict[str, Any], orjson.loads(prior))
            self._count("fast_reject")
            raise SoldOut("sold out") if known == "sold_out" else NotOnSale("the sale is closed")
        if not self.buckets.take(who.id):
            self._count("rate_limited")
            raise RateLimited("too many taps; slow down")
        return None

    async def _take(self, who: Principal, card_id: str, qty: int, request_id: str,
                    res: Result | None) -> dict[str, Any]:
        """The tap through Redis (``res``: its first answer, if it has one already), retried
        after a rebuild when Redis lost the card or fenced it; then its ack."""
        attempt = 0
        while True:
            attempt += 1
            if res is None:
                if self.inventory.floors.get(card_id) is None:
                    await self._load_floor(card_id)
                try:
                    res = await self.batcher.buy(card_id, who.id, qty, request_id, self._order_id(card_id))
                except RedisConnectionError:
                    self.orders.redis_trouble()  # Redis restarted or failed over? check at reconnect
                    raise
            if res.code in ("NOT_FOUND", "FENCED"):
                # Redis lost the card, or it is fenced (being rebuilt, or behind what SQL or this
                # process has seen): wait a bounded time for the rebuild from SQL, then try again.
                # SQL then holds every acknowledged order, so a retried request gets its order.
                if res.code == "FENCED":
                    self.inventory.floors.forget(card_id)  # the rebuild sets a new, higher seq
                try:
                    found = await asyncio.wait_for(self.orders.rebuild(card_id), self.settings.fence_wait_s)
                except TimeoutError:
                    self._count("fenced")
                    raise Unavailable(FENCED_MESSAGE) from None
                if found and attempt < 3:
                    res = None
                    continue
            elif res.code == "RETRY" and attempt < 3:
                res = None
                continue
            break
        if res.code == "OK" and res.order is not None:
            try:
                room_id = self._card_rooms.get(card_id) or await self.room_of(card_id)
                self.mark_dirty(card_id, room_id)
                if res.left == 0:
                    await self.status_changed(room_id, card_id, "sold_out")
            except Exception:
                # The order is taken: a failed push (Redis connection lost just now) must not
                # turn it into an error the buyer would read as "not bought".
                log.warning("pushes after order %s failed", res.order["id"], exc_info=True)
        return self._ack(who, card_id, request_id, res)

    def _settle_now(self, who: Principal, card_id: str, request_id: str, res: Result) -> dict[str, Any] | None:
        """The ack of a first answer from Redis when nothing needs waiting for (raises the
        contract's error for a refusal); None when :meth:`_take` must go on: a rebuild or retry,
        or an order whose card's room is not known here yet or which sold the card out (a push)."""
        if res.code in ("NOT_FOUND", "FENCED", "RETRY"):
            return None
        if res.code == "OK" and res.order is not None:
            room_id = self._card_rooms.get(card_id)
            if room_id is None or res.left == 0:
                return None
            self.mark_dirty(card_id, room_id)
        return self._ack(who, card_id, request_id, res)

    def _ack(self, who: Principal, card_id: str, request_id: str, res: Result) -> dict[str, Any]:
        """A tap's final answer from Redis as its ack, or the contract's error."""
        self._count(res.code.lower())
        if res.code in ("OK", "DUP"):
            if res.order is None:
                raise Unavailable("order record missing; retry")
            ack = {"order": order_view(card_id, res.order), "left": res.left}
            self._accepted[(card_id, who.id, request_id)] = orjson.dumps(ack)
            if len(self._accepted) > 200_000:
                self._accepted.popitem(last=False)
            return ack
        if res.code == "SOLD_OUT":
            if res.left <= 0:  # (asking for more than is left is SOLD_OUT too, but others may buy)
                self._remember(card_id, "sold_out")
            raise SoldOut("sold out", left=res.left)
        if res.code == "LIMIT_EXCEEDED":
            raise LimitExceeded("purchase limit reached for this product")
        if res.code == "NOT_ELIGIBLE":
            raise NotEligible("this product is for the streamer's followers: follow to buy")
        if res.code == "NOT_ON_SALE":
            raise NotOnSale("this product is not on sale now")
        if res.code == "NOT_FOUND":
            raise NotFound("no such card")
        if res.code == "FENCED":
            raise Unavailable(FENCED_MESSAGE)
        if res.code == "NOT_DURABLE":
            raise Unavailable("the order is not yet confirmed durable; retry with the same request_id")
        raise Unavailable(f"unexpected buy result {res.code}")

    async def _load_floor(self, card_id: str) -> None:
        """This process's seq floor of a card starts at SQL's (one query per card, shared by the
        taps that miss at once). Unknown ids store nothing."""
        lookup = self._floor_lookups.get(card_id)
        if lookup is None:
            lookup = self._floor_lookups[card_id] = asyncio.ensure_future(self._sql_seq(card_id))
            lookup.add_done_callback(lambda _: self._floor_lookups.pop(card_id, None))
        try:
            seq = await asyncio.wait_for(asyncio.shield(lookup), 1.0)
        except Exception as e:
            # The database is down: buying goes on (orders wait in the stream) with the floor
            # this process has; the fence check raises it to SQL's once the database is back.
            log.debug("seq floor of card %s not loaded from SQL: %r", card_id, e)  # healthz says the db is down
            return
        if seq is not None:
            self.inventory.floors.known(card_id, seq)

    async def _sql_seq(self, card_id: str) -> int | None:
        async with self.svc.db() as s:
            seq: int | None = (await s.execute(select(Card.seq).where(Card.id == card_id))).scalar_one_or_none()
        return seq

    def _count(self, outcome: str) -> None:
        """Count a tap's outcome; the labelled child is looked up once per outcome (hot path)."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.svc.metrics.buys.labels(outcome)
        child.inc()

    async def room_of(self, card_id: str) -> str:
        room = self._card_rooms.get(card_id)
        if room is not None:
            return room
        # One lookup per card however many taps miss the cache at once (the first tick of a storm).
        lookup = self._room_lookups.get(card_id)
        if lookup is None:
            lookup = self._room_lookups[card_id] = asyncio.ensure_future(self._lookup_room(card_id))
            lookup.add_done_callback(lambda _: self._room_lookups.pop(card_id, None))
        return await asyncio.shield(lookup)

    async def _lookup_room(self, card_id: str) -> str:
        state = await self.inventory.state(card_id)
        room = state.room_id if state else (await self._card_row(card_id)).room_id
        if len(self._card_rooms) > 100_000:
            self._card_rooms.clear()
        self._card_rooms[card_id] = room
        return room

    # --- pushes and hints --------------------------------------------------------------------
    def _remember(self, card_id: str, status: str) -> None:
        if status in ("sold_out", "closed"):
            self.unavailable[card_id] = status
        else:
            self.unavailable.pop(card_id, None)

    async def status_changed(self, room_id: str, card_id: str, status: str) -> None:
        """Tell the room and every process (fast reject) that a sale's status changed."""
        self._remember(card_id, status)
        await self.svc.bus.publish(keys.CH_CARD_HINTS, f"{card_id} {status}")
        await self.svc.pusher.to_room(room_id, "flash:status", {"card_id": card_id, "status": status})

    async def on_hint(self, message: str) -> None:
        card_id, _, status = message.partition(" ")
        self._remember(card_id, status)

    def mark_dirty(self, card_id: str, room_id: str) -> None:
        self._card_rooms[card_id] = room_id
        self._dirty.add(card_id)
        self._dirty_event.set()

    async def push_stock_loop(self, stop: asyncio.Event) -> None:
        """Coalesced ``flash:stock``: at most one push per card per interval, across processes."""
        interval = self.settings.stock_push_interval_s
        interval_ms = max(1, int(interval * 1000))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty_event.wait(), 1.0)
            self._dirty_event.clear()
            try:
                dirty, self._dirty = self._dirty, set()
                states = await self.inventory.states(sorted(dirty))
                for card_id, state in states.items():
                    if state is None:
                        continue
                    value = f"{state.left}:{state.sold}"
                    push = await self.svc.scripts.coalesce(
                        keys=[keys.card_tick(card_id) + ":last", keys.card_tick(card_id)],
                        args=[value, interval_ms])
                    if int(push) == 1:
                        await self.svc.pusher.to_room(state.room_id, "flash:stock",
                                                      {"card_id": card_id, "left": state.left, "sold": state.sold})
                    elif int(push) == 0:
                        self._dirty.add(card_id)  # another push was within the interval: later
                if self._dirty:
                    self._dirty_event.set()
            except Exception as e:
                log_loop_error(log, "stock push failed", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def scheduler_loop(self, stop: asyncio.Event) -> None:
        """Open scheduled sales when their time comes and close them when it ends."""
        while not stop.is_set():
            try:
                now = now_ms()
                cards = await self.inventory.active_cards()
                states = await self.inventory.states(cards)
                for card_id, st in states.items():
                    if st is None:
                        continue
                    target = None
                    if st.status == "scheduled" and now >= st.starts_ms:
                        target = "on_sale"
                    elif st.status in ("on_sale", "sold_out", "scheduled") and st.ends_ms and now >= st.ends_ms:
                        target = "closed"
                    if target:
                        code, status = await self.inventory.set_status(card_id, target, now)
                        if code == "OK":
                            await self.status_changed(st.room_id, card_id, status)
            except Exception as e:
                log_loop_error(log, "scheduler failed", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


def install(svc: Services) -> None:
    """Build the flash-buy and order services and their loops."""
    from live.commerce.orders import OrderService

    flash = FlashService(svc)
    orders = OrderService(svc, flash)
    flash.orders = orders
    svc.flash = flash
    svc.orders = orders
    svc.storage = flash.storage
    svc.images = flash.images
    svc.rooms.cards = flash
    svc.bus.subscribe(keys.CH_CARD_HINTS, flash.on_hint)

    async def persister_ok() -> bool:
        return orders.persister.healthy

    # Sides: docs/architecture.md, "Process roles". flash-stock pushes the cards this process
    # changed (its own buys, or its sweeper's releases); fence-check keeps this process's buys
    # from running on a Redis that fell behind SQL.
    svc.add_loop("flash-stock", flash.push_stock_loop, "both")
    svc.add_loop("flash-scheduler", flash.scheduler_loop, "background")
    svc.add_loop("order-persister", orders.persister.run, "background", health=("order_persister", persister_ok))
    svc.add_loop("order-sweeper", orders.sweeper_loop, "background")
    svc.add_loop("reconcile", orders.reconcile_loop, "background")
    svc.add_loop("fence-check", orders.fence_loop, "serving")

    if flash.text_reader is not None:
        reader = flash.text_reader
        svc.closers.append(lambda: asyncio.to_thread(reader.close))
        if svc.settings.ocr_frame_interval_s > 0:
            svc.add_loop("ocr-frames", _frame_sampler(svc, reader).run, "serving")  # reads this process's video


def _frame_sampler(svc: Services, reader: TextReader) -> FrameSampler:
    """Read text in live video: a contact shown on screen counts against the streamer."""

    async def live_rooms() -> list[str]:
        return [r["id"] for r in await svc.rooms.list_live(limit=1000)]

    def latest_frame(room_id: str) -> bytes | None:
        # svc.media is installed after this domain: look it up when sampling, not now.
        media: MediaService | None = getattr(svc, "media", None)
        return media.latest_jpeg(room_id) if media is not None else None

    async def on_text(room_id: str, text: str) -> None:
        verdict = svc.guard.verdict(text)
        finding = verdict.finding if verdict.action == "block" else None
        if finding is None:
            return
        room = await svc.rooms.get(room_id)
        svc.metrics.blocked.labels("video", finding.reason).inc()
        await svc.moderation.violation(room.streamer_id, kind="video", reason=finding.reason,
                                       detector=finding.kind, text=text[:200], room_id=room_id,
                                       fragment=finding.match)

    return FrameSampler(reader, interval_s=svc.settings.ocr_frame_interval_s, cpu_budget=svc.settings.ocr_cpu_budget,
                        rooms=live_rooms, frame=latest_frame, on_text=on_text)
