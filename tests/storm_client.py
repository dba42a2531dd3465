"""A buyer process for storm tests: connects its share of real Socket.IO viewers, waits for
"go" on stdin, has them all tap buy at once, and prints one JSON line of what they saw.

    python -m tests.storm_client URL CARD_ID TOKENS_FILE [TAPS]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import orjson
import socketio


async def main(url: str, card_id: str, tokens: list[str], taps: int) -> dict[str, Any]:
    clients = [socketio.AsyncClient(reconnection=False) for _ in tokens]
    gone: dict[int, asyncio.Event] = {}
    for c in clients:
        gone[id(c)] = ev = asyncio.Event()
        c.on("disconnect", lambda *a, ev=ev: ev.set())
    sem = asyncio.Semaphore(50)

    async def connect(c: socketio.AsyncClient, token: str) -> None:
        # As a phone app does: a refused or timed-out connect (a busy server, a backend briefly
        # UNAVAILABLE) is tried again a few times before the buyer gives up.
        async with sem:
            for attempt in range(5):
                try:
                    await c.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=30)
                    return
                except socketio.exceptions.ConnectionError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))

    await asyncio.gather(*[connect(c, t) for c, t in zip(clients, tokens, strict=True)])
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    acks: list[dict[str, Any]] = []
    errors: dict[str, int] = {}
    t0 = time.perf_counter()

    async def tap(c: socketio.AsyncClient) -> None:
        for _ in range(taps):
            req = uuid.uuid4().hex
            call = asyncio.ensure_future(
                c.call("flash:buy", {"card_id": card_id, "qty": 1, "request_id": req}, timeout=60))
            dropped = asyncio.ensure_future(gone[id(c)].wait())
            await asyncio.wait([call, dropped], return_when=asyncio.FIRST_COMPLETED)
            dropped.cancel()
            if not call.done() or call.exception() is not None:
                # The server went away (crash tests): this tap has no answer.
                call.cancel()
                errors["NO_ANSWER"] = errors.get("NO_ANSWER", 0) + 1
                return
            ack = call.result()
            if ack.get("ok"):
                acks.append({"order_id": ack["order"]["id"], "user_id": ack["order"]["user_id"], "request_id": req})
            else:
                code = ack["error"]["code"]
                errors[code] = errors.get(code, 0) + 1

    await asyncio.gather(*[tap(c) for c in clients])
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*[c.disconnect() for c in clients], return_exceptions=True)
    return {"acks": acks, "errors": errors, "elapsed": elapsed}


if __name__ == "__main__":
    url, card_id, tokens_file = sys.argv[1:4]
    taps = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    tokens = orjson.loads(open(tokens_file, "rb").read())  # noqa: SIM115
    result = asyncio.run(main(url, card_id, tokens, taps))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
