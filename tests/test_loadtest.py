"""The load tester against a real server: its report must agree with the server's records."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from live.loadtest import LoadConfig, run
from live.loadtest.__main__ import write_outputs
from live.loadtest.api import Backend
from live.loadtest.client import ConnectRefused, LeanSocket, make_session
from live.loadtest.scenarios import server_verdict
from live.loadtest.worker import Samples
from tests.support import ROOT, Api, RunningServer

CONTRACT_KEYS = {"viewers", "stock", "sold", "oversold", "lost_orders", "duplicate_orders", "buys_per_s",
                 "latency_ms", "fanout_ms", "errors"}


async def test_flash_report_agrees_with_server(server: RunningServer, api: Api, tmp_path: Path) -> None:
    report = await run(LoadConfig(url=server.url, viewers=200, stock=50, progress=False, timeout=30))
    d = report.data
    assert d["server"] == "project" and d["connected"] == 200
    assert d["sold"] == 50 and d["oversold"] == 0 and d["lost_orders"] == 0 and d["duplicate_orders"] == 0
    assert d["verdict"] == "ok" and d["verdict_source"] == "server audit"
    # One tap each: 50 orders, and every other tap told SOLD_OUT; no timeouts, no lost acks.
    assert d["acks"] == 200 and d["errors"] == {"SOLD_OUT": 150}
    assert d["client_view"] == {"acked_orders": 50, "distinct_acked_orders": 50, "acked_qty": 50}
    assert d["fanout_ms"]["received"] == 200 and 0 < d["fanout_ms"]["p50"] <= d["fanout_ms"]["max"]
    # The delivery, timed from the first viewer's card: never longer than from the listing request.
    assert 0 <= d["fanout_after_first_ms"]["p50"] <= d["fanout_after_first_ms"]["max"] <= d["fanout_ms"]["max"]
    assert 0 <= d["fanout_before_answer"] <= 1
    assert 0 < d["latency_ms"]["p50"] <= d["latency_ms"]["p99"] <= d["latency_ms"]["max"]
    assert d["buys_per_s"] > 0
    card = await api.ok("GET", f"/api/cards/{d['card_id']}")
    assert card["left"] == 0 and card["sold"] == 50 and card["stock"] == 50
    assert d["server_card"]["left"] == 0

    json_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    write_outputs(report, json_path, html_path)
    saved = orjson.loads(json_path.read_bytes())
    assert saved.keys() >= CONTRACT_KEYS
    assert set(saved["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert {"p50", "p99", "max"} <= set(saved["fanout_ms"])
    page = html_path.read_text(encoding="utf-8")
    assert page.count("<svg") == 3 and "<script" not in page and "http" not in page.split("<pre>")[0].replace(
        server.url, "")


async def test_verdict_comes_from_the_server(server: RunningServer, api: Api) -> None:
    """An acknowledged order the server never heard of is counted lost, whatever the client says."""
    async with make_session() as session:
        backend = Backend(server.url, session)
        await backend.setup_room()
        created = await backend.create_card(stock=3, limit=1)
        card_id = str(created.card["id"])
        v = await api.guest()
        buy = await api.ok("POST", f"/api/cards/{card_id}/buy", json={"qty": 1, "request_id": "r1"},
                           token=v["token"])
        s = Samples(order_ids=[buy["order"]["id"], "made-up-order-id"], sold_acked=2)
        out = await server_verdict(backend, card_id, 3, s, timeout=10)
    assert out["sold"] == 1 and out["lost_orders"] == 1 and out["verdict"] == "violated"
    assert out["audit"]["missing_order_ids"] == ["made-up-order-id"]


async def test_lean_client_refusal_acks_and_bad_input(server: RunningServer, api: Api) -> None:
    async with make_session() as session:
        bad = LeanSocket(session, server.url)
        with pytest.raises(ConnectRefused) as e:
            await bad.connect({"token": "garbage"}, timeout=5)
        assert e.value.code == "UNAUTHORIZED"

        seen: list[str] = []
        good = LeanSocket(session, server.url, lambda name, raw, start, t: seen.append(name))
        await good.connect({"token": (await api.guest())["token"]}, timeout=5)
        try:
            ack = await good.call("room:join", {"room_id": 42}, timeout=5)
            assert ack["ok"] is False and ack["error"]["code"] == "INVALID" and good.connected
            s = await api.streamer()
            room = await api.live_room(s["token"])
            ack = await good.call("room:join", {"room_id": room["id"]}, timeout=5)
            assert ack["ok"] is True and ack["room"]["id"] == room["id"]
            await api.ok("POST", f"/api/rooms/{room['id']}/end", token=s["token"])
            for _ in range(100):
                if "room:status" in seen:
                    break
                await asyncio.sleep(0.05)
            assert "room:status" in seen
        finally:
            await good.close()
        assert not good.connected


async def test_cli_with_two_processes_writes_contract_json(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "live.loadtest", "flash", "--url", server.url, "--viewers", "30", "--stock", "7",
        "--taps", "2", "--limit", "1", "--procs", "2", "--json", str(out), "--quiet", cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    d = orjson.loads(out.read_bytes())
    assert d.keys() >= CONTRACT_KEYS and d["procs"] == 2 and d["connected"] == 30
    assert d["sold"] == 7 and d["lost_orders"] == 0 and d["oversold"] == 0 and d["duplicate_orders"] == 0
    # Two taps each, limit one: 60 acks, 7 orders; the rest refused by stock or by the per-user limit.
    errs = Counter(d["errors"])
    assert d["acks"] == 60 and sum(errs.values()) == 53 and set(errs) <= {"SOLD_OUT", "LIMIT_EXCEEDED"}
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/api/cards/{d['card_id']}") as r:
        assert (await r.json())["left"] == 0
