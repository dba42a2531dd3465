"""Signatures in the Stripe style: ``X-Live-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]``
where each ``v1`` is HMAC-SHA256(secret, ``"<t>.<raw body>"``). During a secret rotation's
grace period a delivery carries one ``v1`` per valid secret (new first); a receiver accepts
the request when any ``v1`` matches its secret and ``t`` is within its tolerance window.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence


def sign(secret: str, t: int, body: bytes) -> str:
    """The hex ``v1`` of ``body`` signed at ``t`` with ``secret``."""
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def header(secrets: Sequence[str], body: bytes, t: int | None = None) -> str:
    """The ``X-Live-Signature`` value for ``body`` signed by each of ``secrets`` (new first)."""
    t = int(time.time()) if t is None else t
    return ",".join([f"t={t}", *(f"v1={sign(s, t, body)}" for s in secrets)])


def verify(value: str, body: bytes, secret: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """True when ``value`` (an ``X-Live-Signature``) holds a ``v1`` of ``body`` by ``secret``
    with a timestamp no further than ``tolerance_s`` from now (replays of old requests fail)."""
    t: int | None = None
    sigs: list[str] = []
    for part in value.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t" and v.isdigit():
            t = int(v)
        elif k == "v1":
            sigs.append(v)
    if t is None or not sigs:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    want = sign(secret, t, body)
    # compare_digest against every candidate: no early exit that leaks which one matched
    return any([hmac.compare_digest(want, s) for s in sigs])
