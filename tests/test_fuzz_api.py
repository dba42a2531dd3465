"""schemathesis against /api/openapi.json on a running server: no 500, every response matches
its documented schema and status, every error is the contract's JSON (the one ``Error``
schema). Runs on the SQLite pass only (see the skip): the handlers under test are the same on
PostgreSQL, and the run is the slowest single test of the suite.

Run alone: ``.venv/bin/python -m pytest -q tests/test_fuzz_api.py`` (FUZZ_EXAMPLES=n for more)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.support import Api, RunningServer

pytestmark = pytest.mark.skipif(bool(os.environ.get("LIVE_TEST_DATABASE_URL")),
                                reason="fuzzed once per CI run, on the SQLite pass")

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "8")


async def _schemathesis(server: RunningServer, token: str, tmp: Path, *extra: str) -> tuple[int, str]:
    exe = Path(sys.executable).with_name("schemathesis")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "run", f"{server.url}/api/openapi.json", "--checks", CHECKS, "--phases", "examples,fuzzing",
        "--max-examples", EXAMPLES, "--seed", "1616", "--workers", "2", "--request-timeout", "20",
        "--suppress-health-check", "all", "--no-shrink", "--header", f"Authorization: Bearer {token}",
        "--report", "junit", "--report-dir", str(tmp), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.timeout(300)
async def test_fuzz_the_api(api: Api, server: RunningServer, tmp_path: Path) -> None:
    streamer = await api.streamer()
    await api.live_room(streamer["token"])
    # As a streamer: every operation (rooms, cards, orders, fans; the moderator-only ones answer 403).
    code, out = await _schemathesis(server, streamer["token"], tmp_path / "streamer")
    assert code == 0, out[-6000:]
    # As a moderator: the moderation and report queues, and role changes.
    code, out = await _schemathesis(server, server.settings.admin_token, tmp_path / "moderator",
                                    "--include-tag-regex", "^(moderation|reports|identity)$")
    assert code == 0, out[-6000:]
