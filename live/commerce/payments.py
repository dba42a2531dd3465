"""Payments: the provider's signed callback and the simulated ``/pay`` settle an order through
one script (``after_pay.lua``).

The callback is Stripe-style, the scheme of the webhooks (one implementation,
``live.integrations.signing``): ``X-Live-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>.<raw body>")>``; a wrong signature, or one older (or newer) than ``TOLERANCE_S``, is
refused. Settling is idempotent on the provider's ``transaction_id``; a payment for an order
that already expired or was cancelled is refunded at once and takes no stock (the units went
back when it expired), and a second payment of a paid order is refunded as well.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from live.commerce.postsale import PostSale
from live.commerce.views import card_of_order, order_view, parse_order
from live.core.auth import Principal
from live.core.errors import Conflict, Invalid, NotFound, Unauthorized
from live.core.ids import now_ms
from live.integrations import signing

TOLERANCE_S = signing.TOLERANCE_S
PAY_KEYS = ["state", "bought", "orders", "deadlines", "txns", "stream"]


def payment_secret(configured: str, token_secret: str) -> str:
    """The callback key: the configured one, or one derived from the token secret (the same on
    every process that shares the token secret, and never the token secret itself)."""
    if configured:
        return configured
    return hmac.new(token_secret.encode(), b"payment-callback", hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    """The ``X-Live-Signature`` header value for ``body`` (what a provider, or a test, sends)."""
    return signing.header([secret], body, t)


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> None:
    """Raise ``Unauthorized`` unless ``header`` signs ``body`` with ``secret`` within the tolerance."""
    why = signing.problem(header, body, secret, TOLERANCE_S, now)
    if why is not None:
        raise Unauthorized(why)


@dataclass(frozen=True, slots=True)
class Settled:
    outcome: str  # paid | duplicate | refunded
    order: dict[str, Any]


class Payments:
    def __init__(self, post: PostSale, secret: str) -> None:
        self.post = post
        self.secret = secret

    def check_signature(self, header: str, raw_body: bytes) -> None:
        """A provider's callback is believed only with a fresh signature over its raw body
        (checked before the body is even parsed)."""
        verify(self.secret, header, raw_body)

    async def pay_simulated(self, who: Principal, order_id: str) -> dict[str, Any]:
        """The buyer's simulated payment (``POST /api/orders/{id}/pay``): the same settlement, one
        transaction per order, and strict — an order that cannot be paid is refused, not charged."""
        settled = await self.settle(order_id, f"sim-{order_id}", None, owner=who.id, strict=True)
        return settled.order

    async def settle(self, order_id: str, transaction_id: str, amount_cents: int | None, *, owner: str,
                     strict: bool) -> Settled:
        card_id = card_of_order(order_id)
        code, raw, card_status = await self.post.run(
            "after_pay", card_id, PAY_KEYS,
            [order_id, owner, transaction_id, "" if amount_cents is None else amount_cents, now_ms(),
             "1" if strict else "0"])
        if code in ("NOT_FOUND", "FORBIDDEN"):
            raise NotFound("no such order")
        if code == "TXN":
            raise Conflict("this transaction paid another order")
        if code == "AMOUNT":
            raise Invalid(f"amount does not match the order ({parse_order(raw)['a']} cents)")
        if code == "STATE":
            status = parse_order(raw)["s"]
            raise Conflict(f"order is {status}", status=status)
        if code == "DUP":  # told before: the same answer, nothing pushed again
            return Settled("duplicate", order_view(card_id, parse_order(raw)))
        order, _ = await self.post.announce(card_id, raw, card_status=card_status)
        assert order is not None
        if code == "DUE":
            self.post.svc.metrics.orders_expired.inc()
            raise Conflict("the payment window has passed; the order expired", status="expired")
        self.post.metrics.payments.labels("paid" if code == "PAID" else "refunded").inc()
        if code != "PAID":
            self.post.count_refund("late_payment" if code == "LATE" else "double_payment", int(parse_order(raw)["a"]))
        return Settled("paid" if code == "PAID" else "refunded", order)
