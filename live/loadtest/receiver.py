"""The rehearsal's webhook receiver: a small aiohttp server that plays the shop's ERP.

It verifies every delivery exactly as docs/integrations.md tells a real receiver to (the
``X-Live-Signature`` over the raw body, any ``v1`` matching, a timestamp within 300 s). The
check is the standard-library one that page gives receivers, not an import of the server's
``live.integrations.signing``: the load tester stays separate from the server's packages
(tests/test_layout.py), and a judge that shares the signer's code could share its bug
(tests/test_verdict11.py signs with the server's module and checks that the two agree). It counts:

- ``delivered``: deliveries with a good signature of a known webhook and a well-formed event of a
  known type, by event id (a retry or a replay of a delivered event counts again: deliveries are
  at least once, so ``duplicates`` is expected to be small, not zero);
- ``unsigned``: no signature, or one that cannot be parsed;
- ``bad_signature``: a signature no known secret made, or one too old;
- ``unknown``: for a webhook id the receiver was not told of, while it knows no secret at all, or
  an event it cannot read (no id, an unknown type, a type other than ``X-Live-Event``).

Only ``delivered`` ones are answered 2xx; the others are refused (401/404/400), so the server
keeps them as failed attempts in its delivery log.

Subscribe ``await receiver.start()`` (or ``url_for(webhook_id)``, which names the webhook in the
path) and tell the receiver the secret from the subscription's 201 with ``add_secret``. Without a
webhook id in the path, a delivery is checked against every secret the receiver knows.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

PATH = "/hooks"
TOLERANCE_S = 300
# The event types of docs/integrations.md ("Events"); a test keeps them equal to the server's.
EVENTS = ("order.created", "order.paid", "order.shipped", "order.completed", "order.refunded",
          "aftersale.updated", "card.sold_out", "room.live", "room.ended")
MALFORMED = "missing or malformed X-Live-Signature"


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    """An ``X-Live-Signature`` for ``body`` (the payment callbacks the rehearsal sends), the
    scheme :func:`signature_problem` checks (the load tester imports nothing of the server)."""
    t = int(time.time()) if t is None else t
    return f"t={t},v1={_hmac(secret, t, body)}"


def _hmac(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def signature_problem(value: str, body: bytes, secret: str, tolerance_s: int = TOLERANCE_S) -> str | None:
    """Why ``value`` (an ``X-Live-Signature``) does not sign the raw ``body`` with ``secret``, or
    None when it does: ``t=<unix s>`` within ``tolerance_s`` of now and any ``v1`` equal to the hex
    HMAC-SHA256 of ``"<t>.<body>"`` (docs/integrations.md, "Verifying the signature")."""
    t: int | None = None
    sigs: list[str] = []
    for part in value.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t" and v.isascii() and v.isdigit() and len(v) <= 12:
            t = int(v)
        elif k == "v1":
            sigs.append(v)
    if t is None or not sigs:
        return MALFORMED
    if abs(time.time() - t) > tolerance_s:
        return "timestamp outside the tolerance"
    want = _hmac(secret, t, body)
    if not any([hmac.compare_digest(want, s) for s in sigs]):
        return "bad signature"
    return None


@dataclass
class ReceiverCounts:
    """What the receiver saw (see the module's docstring for what each count means)."""

    delivered: Counter[str] = field(default_factory=Counter)  # event id -> good deliveries
    by_webhook: dict[str, Counter[str]] = field(default_factory=dict)  # webhook id -> event id -> deliveries
    types: Counter[str] = field(default_factory=Counter)  # event type -> good deliveries
    unsigned: int = 0
    bad_signature: int = 0
    unknown: int = 0

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of an event to a webhook (retries, replays)."""
        return sum(n - 1 for events in self.by_webhook.values() for n in events.values() if n > 1)

    def summary(self) -> dict[str, Any]:
        return {"delivered_events": len(self.delivered), "deliveries": sum(self.delivered.values()),
                "duplicates": self.duplicates, "unsigned": self.unsigned, "bad_signature": self.bad_signature,
                "unknown": self.unknown, "by_type": dict(sorted(self.types.items()))}


class WebhookReceiver:
    """An aiohttp server on ``host`` (a free port) that verifies and counts webhook deliveries."""

    def __init__(self, secrets: dict[str, str] | None = None, host: str = "127.0.0.1",
                 tolerance_s: int = TOLERANCE_S) -> None:
        self.host = host
        self.tolerance_s = tolerance_s
        self._secrets: dict[str, list[str]] = {k: [v] for k, v in (secrets or {}).items()}
        self.counts = ReceiverCounts()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add_secret(self, webhook_id: str, secret: str) -> None:
        """Accept ``secret`` for ``webhook_id`` (a rotated secret is added next to the old one)."""
        known = self._secrets.setdefault(webhook_id, [])
        if secret not in known:
            known.insert(0, secret)

    def url_for(self, webhook_id: str) -> str:
        """A URL that names the webhook, so its deliveries are checked against its secret only."""
        return f"{self.url}/{webhook_id}"

    async def start(self) -> str:
        """Listen on a free port; returns the URL to subscribe."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(PATH, self._handle)
        app.router.add_post(PATH + "/{webhook_id}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        self.url = f"http://{shown}:{port}{PATH}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _refuse(self, what: str, status: int) -> web.Response:
        setattr(self.counts, what, getattr(self.counts, what) + 1)
        return web.Response(status=status, text=what)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()  # the raw bytes: the signature is over these, not a re-encoding
        hook_id = request.match_info.get("webhook_id")
        if hook_id is not None:
            if hook_id not in self._secrets:
                return self._refuse("unknown", 404)
            candidates = [(hook_id, s) for s in self._secrets[hook_id]]
        else:
            candidates = [(h, s) for h, secrets in self._secrets.items() for s in secrets]
        value = request.headers.get("X-Live-Signature", "")
        if not value:
            return self._refuse("unsigned", 401)
        if not candidates:
            return self._refuse("unknown", 404)
        matched: str | None = None
        problems = set()
        for hook, secret in candidates:
            problem = signature_problem(value, raw, secret, self.tolerance_s)
            if problem is None:
                matched = hook
                break
            problems.add(problem)
        if matched is None:
            malformed = problems == {MALFORMED}
            return self._refuse("unsigned" if malformed else "bad_signature", 401)
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._refuse("unknown", 400)
        if not isinstance(event, dict):
            return self._refuse("unknown", 400)
        event_id, kind = event.get("id"), event.get("type")
        if (not isinstance(event_id, str) or not event_id or kind not in EVENTS
                or request.headers.get("X-Live-Event") != kind):
            return self._refuse("unknown", 400)
        self.counts.delivered[event_id] += 1
        self.counts.by_webhook.setdefault(matched, Counter())[event_id] += 1
        self.counts.types[str(kind)] += 1
        return web.Response(status=200, text="ok")
