"""HTTP side of a load test: streamer, room, card, guests, and the server's audit verdict.

Talks to the project server, and — for side-by-side benchmarks — to the Node.js reference peer
(``../shared/peers/node-socketio``), which speaks the same guest/room/card/buy wire but has no
accounts (a guest acts as streamer), no ``/live`` step, takes the card as JSON and has no
audit endpoint. :class:`Backend` notices the peer when ``/api/auth/register`` is 404.
"""

from __future__ import annotations

import asyncio
import os
import random
import string
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)
# Answers that mean "not now" (a server restarting its Redis, a proxy without a backend): the
# audit after a fault waits these out, within its timeout, instead of aborting the report.
RETRYABLE_STATUS = (502, 503, 504)


class HttpError(Exception):
    """A non-2xx answer; ``code`` is the contract's error code when the body has one."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        err = body.get("error") if isinstance(body, dict) else None
        self.code = str(err.get("code")) if isinstance(err, dict) and err.get("code") else f"HTTP_{status}"
        super().__init__(f"{method} {path} → {status} {body!r}"[:500])


def tiny_png(width: int = 64, height: int = 64, rgb: tuple[int, int, int] = (230, 40, 60)) -> bytes:
    """A solid-colour RGB PNG built with zlib alone (the load tester needs no Pillow)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height, 9))
            + chunk(b"IEND", b""))


@dataclass
class CardCreated:
    """The card as the server returned it, and when the create request left and came back."""

    card: dict[str, Any]
    t_sent: float
    t_done: float


class Backend:
    """One HTTP session to the server under test."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.kind = "project"  # or "reference" (the Node.js peer)
        self.streamer_token = ""
        self.room_id = ""
        # Why the server's verdict could not be had (it never answered in time), for the report.
        self.audit_problem = ""

    async def request(self, method: str, path: str, *, token: str | None = None, json: Any = None,
                      data: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        """JSON in, JSON out; raises :class:`HttpError` unless the status is in ``ok``."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = None
        if json is not None:
            body = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.url + path, headers=headers, data=body if data is None else data,
                                        timeout=HTTP_TIMEOUT) as r:
            raw = await r.read()
            try:
                parsed: Any = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = raw[:200].decode(errors="replace")
            if r.status not in ok:
                raise HttpError(method, path, r.status, parsed)
            return parsed

    async def guest(self, name: str) -> str:
        """A guest viewer's token. With ``LIVE_ADMIN_TOKEN`` set (the operator's moderator
        credential) guests are minted with it, which exempts a load test from the server's
        per-address guest limit; without it, a default server lets one address mint a few."""
        admin = os.environ.get("LIVE_ADMIN_TOKEN", "") if self.kind == "project" else ""
        return str((await self.request("POST", "/api/auth/guest", json={"name": name},
                                       token=admin or None))["token"])

    async def setup_room(self, title: str = "Double-11 rehearsal") -> str:
        """Register a streamer, create a room and take it live; returns the room id."""
        # Letters only: a random hex name can look like a phone number, which the guard refuses.
        username = "lt_" + "".join(random.choices(string.ascii_lowercase, k=12))
        try:
            reg = await self.request("POST", "/api/auth/register",
                                     json={"username": username, "password": "load-test-" + uuid.uuid4().hex,
                                           "role": "streamer"})
            self.streamer_token = str(reg["token"])
        except HttpError as e:
            if e.status != 404:
                raise
            self.kind = "reference"
            self.streamer_token = await self.guest("streamer")
        room = await self.request("POST", "/api/rooms", json={"title": title}, token=self.streamer_token)
        self.room_id = str(room["id"])
        await self.request("POST", f"/api/rooms/{self.room_id}/live", token=self.streamer_token,
                           ok=(200, 201) if self.kind == "project" else (200, 201, 404))
        return self.room_id

    async def create_card(self, stock: int, limit: int | None, price: str = "19.90",
                          title: str = "Double-11 flash card") -> CardCreated:
        """Create a flash card in the room: multipart with a PNG on the project, JSON on the peer."""
        fields: dict[str, str] = {"price": price, "stock": str(stock), "title": title}
        if limit is not None:
            fields["limit_per_user"] = str(limit)
        path = f"/api/rooms/{self.room_id}/cards"
        if self.kind == "reference":
            payload: dict[str, Any] = {"price": price, "stock": stock, "title": title}
            if limit is not None:
                payload["limit_per_user"] = limit
            t_sent = time.monotonic()
            card = await self.request("POST", path, token=self.streamer_token, json=payload)
        else:
            form = aiohttp.FormData()
            for k, v in fields.items():
                form.add_field(k, v)
            form.add_field("image", tiny_png(), filename="card.png", content_type="image/png")
            t_sent = time.monotonic()
            card = await self.request("POST", path, token=self.streamer_token, data=form)
        return CardCreated(card, t_sent, time.monotonic())

    async def _answered(self, call: Any, deadline: float) -> Any:
        """``await call()``, retried every 0.5 s while the server is unreachable or answers
        502/503/504, until ``deadline``; then :class:`ServerUnavailable`."""
        while True:
            try:
                return await call()
            except HttpError as e:
                if e.status not in RETRYABLE_STATUS:
                    raise
                last = f"{e.status} {e.code}"
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() >= deadline:
                raise ServerUnavailable(last)
            await asyncio.sleep(0.5)

    async def get_card(self, card_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """``GET /api/cards/{id}`` or ``None`` when the server has no such route (the peer) or
        did not answer within ``timeout`` (one try once the audit has already waited in vain)."""
        if self.audit_problem:
            timeout = 0
        try:
            return dict(await self._answered(
                lambda: self.request("GET", f"/api/cards/{card_id}", token=self.streamer_token),
                time.monotonic() + timeout))
        except HttpError as e:
            if e.status in (404, 405):
                return None
            raise
        except ServerUnavailable:
            return None

    async def audit(self, card_id: str, order_ids: list[str], timeout: float = 60.0) -> dict[str, Any] | None:
        """The server's reconciliation of ``order_ids`` against its records.

        Polls until ``pending_persist == 0`` (accepted orders still on their way from Redis to
        SQL) or ``timeout``; ``None`` when the server has no audit endpoint, or did not answer
        within ``timeout`` (after a fault: its Redis restarting, say) — then ``audit_problem``
        says so and the report is written all the same.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                res = await self._answered(
                    lambda: self.request("POST", f"/api/cards/{card_id}/audit", token=self.streamer_token,
                                         json={"order_ids": order_ids}), deadline)
            except HttpError as e:
                # We created this card a moment ago, so 404/405 here means the server has no
                # audit route (the Node peer, or a build without it): the verdict is unknown.
                if e.status in (404, 405):
                    return None
                raise
            except ServerUnavailable as e:
                self.audit_problem = f"none: the server did not answer its audit within {timeout:.0f} s ({e})"
                return None
            if not res.get("pending_persist") or time.monotonic() >= deadline:
                return dict(res)
            await asyncio.sleep(0.25)


class ServerUnavailable(Exception):
    """The server did not answer (or answered 502/503/504) until the deadline."""
