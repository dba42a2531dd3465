"""A real HTTP receiver for webhook tests: an aiohttp server on 127.0.0.1 that records every
POST and answers as the test says (a status per call, or hanging until released)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support import Api, free_port


@dataclass
class Received:
    headers: dict[str, str]
    raw: bytes
    status: int  # what the receiver answered

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def type(self) -> str:
        return str(self.body["type"])


@dataclass
class Receiver:
    url: str
    # (request number for this path, parsed body) -> status to answer; default 200
    answer: Callable[[int, Any], int] = lambda n, body: 200
    hang: asyncio.Event | None = None  # when set: hold every request until it is set
    got: list[Received] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    holding: int = 0  # requests being answered right now
    max_holding: int = 0

    def ok(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.got if 200 <= r.status < 300]

    async def wait(self, cond: Callable[[Receiver], bool], timeout: float = 15, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not cond(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: timed out waiting for {what or cond}; got "
                                     f"{[(r.type, r.status) for r in self.got]}")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def receiver(answer: Callable[[int, Any], int] | None = None) -> AsyncIterator[Receiver]:
    port = free_port()
    rec = Receiver(url=f"http://127.0.0.1:{port}/hook")
    if answer is not None:
        rec.answer = answer

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        rec.entered.set()
        rec.holding += 1
        rec.max_holding = max(rec.max_holding, rec.holding)
        try:
            if rec.hang is not None:
                await rec.hang.wait()
        finally:
            rec.holding -= 1
        status = rec.answer(len(rec.got), orjson.loads(raw))
        rec.got.append(Received(dict(request.headers), raw, status))
        return web.Response(status=status, text="ok" if status < 300 else "no")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec
    finally:
        if rec.hang is not None:
            rec.hang.set()
        await runner.cleanup()


# Fast settings for tests: a loopback receiver (so private targets allowed), retries in
# fractions of a second.
FAST: dict[str, Any] = {"webhook_allow_private": True, "webhook_retry_s": 0.1, "webhook_retry_max_s": 0.3,
                        "webhook_timeout_s": 2.0, "webhook_poll_s": 0.05, "webhook_max_attempts": 6}


async def deliveries(api: Api, token: str, hook_id: str) -> list[dict[str, Any]]:
    return list(await api.ok("GET", f"/api/webhooks/{hook_id}/deliveries", token=token))


async def deliveries_when(api: Api, token: str, hook_id: str, cond: Callable[[list[dict[str, Any]]], bool],
                          timeout: float = 10) -> list[dict[str, Any]]:
    """The webhook's delivery log once ``cond`` holds for it (the server records an answer just
    after the receiver has seen the request, so tests wait for the log, not the receiver)."""
    deadline = time.monotonic() + timeout
    while True:
        ds = await deliveries(api, token, hook_id)
        if cond(ds):
            return ds
        if time.monotonic() > deadline:
            raise AssertionError(f"the delivery log never matched: {ds}")
        await asyncio.sleep(0.05)
