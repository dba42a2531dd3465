"""Helpers for the after-sales tests: a paid order, a signed payment callback, waiting on a
condition, and the SQL view of an order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from live.commerce.payments import sign
from tests.flash_support import rid, setup_sale
from tests.support import Api


@dataclass
class Sale:
    streamer: dict[str, Any]
    room: dict[str, Any]
    card: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.streamer["token"])


async def new_sale(api: Api, *, stock: int = 10, limit: int = 1, price: str = "19.90") -> Sale:
    s, room, card = await setup_sale(api, stock=stock, limit_per_user=limit, price=price)
    return Sale(s, room, card)


async def buy(api: Api, sale: Sale, buyer: dict[str, Any], qty: int = 1) -> dict[str, Any]:
    res = await api.ok("POST", f"/api/cards/{sale.card['id']}/buy", json={"qty": qty, "request_id": rid()},
                       token=buyer["token"])
    return dict(res["order"])


async def paid_order(api: Api, sale: Sale, buyer: dict[str, Any] | None = None,
                     qty: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """(buyer, paid order) on the sale."""
    buyer = buyer or await api.guest("buyer")
    order = await buy(api, sale, buyer, qty)
    paid = await api.ok("POST", f"/api/orders/{order['id']}/pay", token=buyer["token"])
    assert paid["status"] == "paid"
    return buyer, paid


async def shipped_order(api: Api, sale: Sale) -> tuple[dict[str, Any], dict[str, Any]]:
    buyer, order = await paid_order(api, sale)
    shipped = await api.ok("POST", f"/api/orders/{order['id']}/ship",
                           json={"carrier": "SF", "tracking_no": "SF123"}, token=sale.token)
    return buyer, shipped


async def callback(api: Api, secret: str, payload: dict[str, Any], t: int | None = None,
                   signature: str | None = None) -> tuple[int, Any]:
    raw = orjson.dumps(payload)
    sig = signature if signature is not None else sign(secret, raw, t)
    return await api.post("/api/payments/callback", data=raw,
                          headers={"X-Live-Signature": sig, "Content-Type": "application/json"})


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, every: float = 0.1) -> Any:
    """The first truthy answer of ``check`` within ``timeout`` (else AssertionError with the last)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s; last answer {last!r}")


async def moderator(api: Api, admin_token: str, services: Any) -> dict[str, Any]:
    """A user promoted to moderator, with a token that carries the role."""
    from live.core.auth import Principal

    user = await api.guest("mod")
    admin = services.auth.verify(admin_token)
    await services.auth.set_role(admin, user["user"]["id"], "moderator")
    fresh = await services.auth.refresh(Principal(user["user"]["id"], "mod", "viewer"))
    return dict(fresh)


async def shipped_case(api: Api, sale: Sale, kind: str = "refund_only",
                       reason: str = "broken") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(buyer, shipped order, the buyer's new case on it)."""
    buyer, order = await shipped_order(api, sale)
    case = await api.ok("POST", f"/api/orders/{order['id']}/after-sales", json={"kind": kind, "reason": reason},
                        token=buyer["token"])
    return buyer, order, case
