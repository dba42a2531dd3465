"""Fulfilment: the card's streamer ships a paid order, its buyer confirms it (or the deadline
does, ``auto_confirm_s`` after shipping), and a buyer cancels: an unpaid order is cancelled, a
paid one not yet shipped is refunded in full at once with its units back on the card.

Each step is one Lua script (``live/lua/after_*.lua``) on the card's keys, so a cancel racing a
shipment, or a confirmation racing the deadline, ends in exactly one outcome.
"""

from __future__ import annotations

from typing import Any, cast

from live.commerce.orders import OrderService
from live.commerce.postsale import PostSale
from live.commerce.views import card_of_order, order_view, parse_order
from live.core import keys
from live.core.auth import Principal
from live.core.errors import Conflict, Forbidden, NotFound
from live.core.ids import now_ms


class Fulfilment:
    def __init__(self, post: PostSale, orders: OrderService) -> None:
        self.post = post
        self.orders = orders
        self.settings = post.svc.settings

    @property
    def _auto_ms(self) -> int:
        return int(self.settings.auto_confirm_s * 1000)

    async def ship(self, who: Principal, order_id: str, carrier: str, tracking_no: str) -> dict[str, Any]:
        card_id = card_of_order(order_id)
        if await self.post.streamer_of(card_id) != who.id:
            await self._visible(who, card_id, order_id)
            raise Forbidden("only the card's streamer ships its orders")
        code, raw = await self.post.run("after_ship", card_id, ["orders", "cases", "due", "stream"],
                                        [order_id, carrier, tracking_no, now_ms(), self._auto_ms])
        self._check(code, raw, case="an after-sales case is open on this order")
        order, _ = await self.post.announce(card_id, raw)
        assert order is not None
        return order

    async def card_orders(self, who: Principal, card_id: str, status: str | None) -> list[dict[str, Any]]:
        """The card's orders as Redis holds them now (the card's streamer or a moderator)."""
        if await self.post.streamer_of(card_id) != who.id and not who.is_moderator:
            raise Forbidden("not your card")
        raw = cast(dict[str, str], await self.post.redis.hgetall(keys.card_orders(card_id)))
        views = [order_view(card_id, parse_order(v)) for v in raw.values()]
        views = [v for v in views if status is None or v["status"] == status]
        return sorted(views, key=lambda v: v["created_at"])

    async def ship_all(self, who: Principal, card_id: str, carrier: str, prefix: str) -> dict[str, Any]:
        """Ship every paid order of a card, each its own atomic step (orders cancelled or under
        a case meanwhile are skipped); tracking numbers are ``<prefix><order id tail>``."""
        if await self.post.streamer_of(card_id) != who.id:
            raise Forbidden("only the card's streamer ships its orders")
        shipped: list[str] = []
        skipped: list[str] = []
        for o in await self.card_orders(who, card_id, "paid"):
            try:
                await self.ship(who, o["id"], carrier, f"{prefix}{o['id'].rpartition('-')[2]}")
                shipped.append(o["id"])
            except Conflict:
                skipped.append(o["id"])
        return {"shipped": shipped, "skipped": skipped}

    async def confirm(self, who: Principal, order_id: str) -> dict[str, Any]:
        card_id = card_of_order(order_id)
        code, raw = await self.post.run("after_confirm", card_id, ["orders", "cases", "due", "stream"],
                                        [order_id, who.id, now_ms(), self._auto_ms])
        if code == "FORBIDDEN":
            await self._visible(who, card_id, order_id)
            raise Forbidden("only the buyer confirms receipt")
        self._check(code, raw)
        order, _ = await self.post.announce(card_id, raw)
        assert order is not None
        return order

    async def auto_confirm(self, card_id: str, order_id: str) -> bool:
        """The deadline's confirmation (the sweeper); True if this call completed the order."""
        code, raw = await self.post.run("after_confirm", card_id, ["orders", "cases", "due", "stream"],
                                        [order_id, "", now_ms(), self._auto_ms])
        if code != "OK":
            return False
        await self.post.announce(card_id, raw)
        return True

    async def cancel(self, who: Principal, order_id: str) -> dict[str, Any]:
        """Unpaid: cancelled (the v1 path). Paid, not shipped: refunded in full at once."""
        card_id = card_of_order(order_id)
        seen = await self.post.order(card_id, order_id)
        # The status read here only picks the script; each script re-checks it atomically.
        if seen is None or seen["s"] != "paid":
            try:
                return await self.orders.cancel(who, order_id)
            except Conflict as e:
                if e.extra.get("status") != "paid":
                    raise
        code, raw, card_status = await self.post.run(
            "after_cancel", card_id, ["state", "bought", "orders", "cases", "stream"], [order_id, who.id, now_ms()])
        if code == "FORBIDDEN":
            raise NotFound("no such order")
        self._check(code, raw, case="an after-sales case is open on this order: it decides the refund")
        order, _ = await self.post.announce(card_id, raw, card_status=card_status)
        assert order is not None
        self.post.count_refund("cancel", int(parse_order(raw)["a"]))
        return order

    async def _visible(self, who: Principal, card_id: str, order_id: str) -> None:
        """NOT_FOUND for an order the caller may not even see (as GET answers), else nothing."""
        o = await self.post.order(card_id, order_id)
        if o is None:
            raise NotFound("no such order")
        if o["u"] != who.id and not who.is_moderator and await self.post.streamer_of(card_id) != who.id:
            raise NotFound("no such order")

    @staticmethod
    def _check(code: str, raw: str, case: str = "") -> None:
        if code == "OK":
            return
        if code == "NOT_FOUND":
            raise NotFound("no such order")
        if code == "CASE":
            raise Conflict(case, status="after_sale_open")
        status = parse_order(raw)["s"] if raw else ""
        raise Conflict(f"order is {status}", status=status)
