"""Signatures in the Stripe style: ``X-Live-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]``
where each ``v1`` is HMAC-SHA256(secret, ``"<t>.<raw body>"``). During a secret rotation's
grace period a delivery carries one ``v1`` per valid secret (new first); a receiver accepts
the request when any ``v1`` matches its secret and ``t`` is within its tolerance window.

One scheme, both directions: the webhook sender signs with it and the payment callback
(``live.commerce.payments``) checks the provider's signature with it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

TOLERANCE_S = 300


def sign(secret: str, t: int, body: bytes) -> str:
    """The hex ``v1`` of ``body`` signed at ``t`` with ``secret``."""
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def header(secrets: Sequence[str], body: bytes, t: int | None = None) -> str:
    """The ``X-Live-Signature`` value for ``body`` signed by each of ``secrets`` (new first)."""
    t = int(time.time()) if t is None else t
    return ",".join([f"t={t}", *(f"v1={sign(s, t, body)}" for s in secrets)])


def problem(value: str, body: bytes, secret: str, tolerance_s: int = TOLERANCE_S,
            now: float | None = None) -> str | None:
    """Why ``value`` (an ``X-Live-Signature``) does not sign ``body`` with ``secret`` at a
    timestamp within ``tolerance_s`` of now (replays of old requests fail), or None if it does."""
    t: int | None = None
    sigs: list[str] = []
    for part in value.split(","):
        k, _, v = part.strip().partition("=")
        # ASCII digits only, and few: int() of a Unicode digit or a huge number would raise.
        if k == "t" and v.isascii() and v.isdigit() and len(v) <= 12:
            t = int(v)
        elif k == "v1":
            sigs.append(v)
    if t is None or not sigs:
        return "missing or malformed X-Live-Signature"
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return "signature timestamp outside the tolerance (replay?)"
    want = sign(secret, t, body)
    # compare_digest against every candidate: no early exit that leaks which one matched
    if not any([hmac.compare_digest(want, s) for s in sigs]):
        return "bad signature"
    return None


def verify(value: str, body: bytes, secret: str, tolerance_s: int = TOLERANCE_S, now: float | None = None) -> bool:
    """True when ``value`` signs ``body`` with ``secret`` within the tolerance (see :func:`problem`)."""
    return problem(value, body, secret, tolerance_s, now) is None
