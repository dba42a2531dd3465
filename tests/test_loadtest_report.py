"""The load tester's reports: the verdict first, readable tables, sensible charts, a verdict for
every scenario, the rooms it made ended afterwards, ``--help`` with defaults."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from live.loadtest.__main__ import write_outputs
from live.loadtest.html import acks_over_time, render_html
from live.loadtest.scenarios import LoadConfig, chat_verdict, run
from tests.support import ROOT, Api, RunningServer


def _flash_data() -> dict[str, object]:
    return {"scenario": "flash", "url": "u", "server": "project", "viewers": 300, "connected": 300, "stock": 50,
            "sold": 50, "oversold": 0, "lost_orders": 0, "duplicate_orders": 0, "over_limit_users": 0,
            "verdict": "ok", "verdict_source": "server audit", "acks": 300, "buys_per_s": 3750.0,
            "latency_ms": {"p50": 20.5, "p95": 40.1, "p99": 50.2, "max": 60.0},
            "fanout_ms": {"p50": 3.0, "p99": 9.0, "max": 12.0, "received": 300},
            "errors": {"SOLD_OUT": 250}, "server_card": {"stock": 50, "left": 0, "sold": 50},
            "acks_per_100ms": [300], "audit": {"pending_persist": 0, "missing_order_ids": []}}


def test_html_report_puts_the_verdict_first_and_shows_tables_not_json() -> None:
    page = render_html(_flash_data(), [0.02] * 300, [0.001 * i for i in range(80)], [0.003] * 300)
    body = page.split("<details>")[0]
    assert body.index("Verdict: OK") < body.index("Summary") < body.index("Timings")
    assert "v-ok" in body and "sold 50 of 50" in body
    # No JSON in the readable part: nested values are tables.
    assert "{" not in re.sub(r"<style>.*?</style>", "", body, flags=re.S)
    assert "<th>p99</th>" in body and '<td class="n">250</td>' in body  # latency columns, SOLD_OUT count
    assert "<pre>" in page.split("<details>")[1]  # the raw JSON is still there, folded away


def test_acks_chart_has_many_bins_for_a_short_burst_and_a_long_run() -> None:
    burst = acks_over_time([0.0008 * i for i in range(100)])  # 80 ms of acks
    assert len(re.findall(r'class="bar2"', burst)) >= 30
    long = acks_over_time([i * 0.5 for i in range(600)])  # five minutes
    n_bins = int(re.search(r"\((\d+) bins of", long).group(1))  # type: ignore[union-attr]
    assert 40 <= n_bins <= 120


def test_violated_and_unknown_verdicts_are_shown_as_such() -> None:
    bad = _flash_data() | {"verdict": "violated", "lost_orders": 2}
    assert "Verdict: VIOLATED" in render_html(bad, [], [], [])
    assert "Verdict: UNKNOWN" in render_html({"scenario": "flash"}, [], [], [])


def test_chat_verdict() -> None:
    assert chat_verdict(10, 10, 100, 100, {"RATE_LIMITED": 4})["verdict"] == "ok"
    missing = chat_verdict(10, 10, 99, 100, {})
    assert missing["verdict"] == "violated" and "1 of 100 deliveries missing" in missing["verdict_source"]
    assert chat_verdict(10, 10, 100, 100, {"TIMEOUT": 1})["verdict"] == "violated"
    assert chat_verdict(0, 0, 0, 0, {})["verdict"] == "unknown"


async def test_chat_run_has_a_verdict_and_ends_its_room(server: RunningServer, api: Api, tmp_path: Path) -> None:
    report = await run(LoadConfig(url=server.url, scenario="chat", viewers=10, messages=2, interval=1.2,
                                  progress=False, timeout=20))
    d = report.data
    assert d["verdict"] == "ok", d
    assert (await api.ok("GET", f"/api/rooms/{d['room_id']}"))["status"] == "ended"
    assert d["room_id"] not in [r["id"] for r in await api.ok("GET", "/api/rooms")]
    html_path = tmp_path / "chat.html"
    write_outputs(report, None, html_path)
    assert "Verdict: OK" in html_path.read_text(encoding="utf-8")


def test_help_shows_defaults() -> None:
    out = subprocess.run([sys.executable, "-m", "live.loadtest", "soak", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    flat = " ".join(out.split())
    assert "(default: 100)" in flat and "(default: 60.0)" in flat and "(default: 100000)" in flat
    assert "(default: None)" not in flat
