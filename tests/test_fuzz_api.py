"""schemathesis against /api/openapi.json on a running server: no 500, every response matches
its documented schema and status, every error is the contract's JSON (the one ``Error``
schema). Runs on the SQLite pass only (see the skip): the handlers under test are the same on
PostgreSQL, and the run is the slowest single test of the suite.

Run alone: ``.venv/bin/python -m pytest -q tests/test_fuzz_api.py`` (FUZZ_EXAMPLES=n for more)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.flash_support import list_card
from tests.support import Api, RunningServer

pytestmark = pytest.mark.skipif(bool(os.environ.get("LIVE_TEST_DATABASE_URL")),
                                reason="fuzzed once per CI run, on the SQLite pass")

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "8")
PHASES = os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing,stateful")


def _config(tmp: Path, ids: dict[str, list[str]]) -> Path:
    """A schemathesis config that fills path parameters with real ids most of the time, so that
    cases get past the 404 and into the handlers' logic (the rest stay random)."""
    lines = []
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.8 }}' for name in ids]
    path = tmp / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _schemathesis(server: RunningServer, token: str, tmp: Path, config: Path,
                        *extra: str) -> tuple[int, str]:
    exe = Path(sys.executable).with_name("schemathesis")
    # One worker: with two, Hypothesis describing strategies in threads hits CPython 3.11's
    # "AST constructor recursion depth mismatch" (ast.parse is not thread-safe there).
    proc = await asyncio.create_subprocess_exec(
        str(exe), "--config-file", str(config), "run", f"{server.url}/api/openapi.json",
        "--checks", CHECKS, "--phases", PHASES,
        "--max-examples", EXAMPLES, "--seed", "1616", "--workers", "1", "--request-timeout", "20",
        "--suppress-health-check", "all", "--no-shrink", "--header", f"Authorization: Bearer {token}",
        "--report", "junit", "--report-dir", str(tmp), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
        cwd=str(tmp.parent))  # its .schemathesis cache goes to the test's temp dir, not the checkout
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    (tmp.parent / f"{tmp.name}.log").write_text(text)
    print(text[text.find("WARNINGS"):])  # shown with -s, or on failure
    return proc.returncode or 0, text


@pytest.mark.timeout(300)
async def test_fuzz_the_api(api: Api, server: RunningServer, tmp_path: Path) -> None:
    streamer = await api.streamer()
    room = await api.live_room(streamer["token"])
    card = await list_card(api, streamer["token"], room["id"], stock=1000)
    buyer = await api.guest("buyer")
    order = (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"request_id": "fuzz-1"},
                          token=buyer["token"]))["order"]
    report = await api.ok("POST", "/api/reports", json={"target": "room", "target_id": room["id"], "reason": "x"},
                          token=buyer["token"])
    config = _config(tmp_path, {
        "room_id": [room["id"]], "card_id": [card["id"]], "order_id": [order["id"]],
        "user_id": [buyer["user"]["id"], streamer["user"]["id"]], "report_id": [report["id"]]})
    # As a streamer: every operation (rooms, cards, orders, fans; the moderator-only ones answer 403).
    code, out = await _schemathesis(server, streamer["token"], tmp_path / "streamer", config)
    assert code == 0, out[-6000:]
    # As a moderator: the moderation and report queues, and role changes.
    code, out = await _schemathesis(server, server.settings.admin_token, tmp_path / "moderator", config,
                                    "--include-tag-regex", "^(moderation|reports|identity)$")
    assert code == 0, out[-6000:]
