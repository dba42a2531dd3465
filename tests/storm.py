"""Run a buy storm from several client processes (tests.storm_client) and collect the acks."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Any

import orjson

from tests.support import ROOT, Api


async def make_viewers(api: Api, n: int) -> list[str]:
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> str:
        async with sem:
            return str((await api.guest(f"buyer{i}"))["token"])

    return await asyncio.gather(*[one(i) for i in range(n)])


class Storm:
    """``procs`` buyer processes sharing ``tokens``; ``await start()`` then ``await results()``."""

    def __init__(self, url: str, card_id: str, tokens: list[str], procs: int = 4, taps: int = 1) -> None:
        self.url, self.card_id, self.taps = url, card_id, taps
        self.shares = [tokens[i::procs] for i in range(procs)]
        self.procs: list[asyncio.subprocess.Process] = []
        self._files: list[str] = []

    async def start(self) -> None:
        """Spawn the buyers, wait until every one is connected, then say go."""
        for share in self.shares:
            fd, path = tempfile.mkstemp(suffix=".json")
            os.write(fd, orjson.dumps(share))
            os.close(fd)
            self._files.append(path)
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.storm_client", self.url, self.card_id, path, str(self.taps),
                cwd=str(ROOT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.procs.append(p)
        for p in self.procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 120)
            assert line.strip() == b"ready", line
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()

    async def results(self, timeout: float = 180) -> dict[str, Any]:
        acks: list[dict[str, Any]] = []
        errors: dict[str, int] = {}
        for p in self.procs:
            assert p.stdout is not None
            out = await asyncio.wait_for(p.stdout.read(), timeout)
            await p.wait()
            r = orjson.loads(out.strip().splitlines()[-1])
            acks += r["acks"]
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        for f in self._files:
            os.unlink(f)
        return {"acks": acks, "errors": errors}
