"""The rehearsal's HTML page: the verdict (final and per phase) first, then the timeline —
acks/s, latency percentiles per phase, errors by code, open connections, after-sales cases by
status over time — and the whole JSON report at the end. Self-contained (inline SVG)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import orjson

from live.loadtest.double11.driver import CASE_STATUSES
from live.loadtest.html import _grid, _kv_table, acks_over_time, latency_histogram, page, series_chart


def _checks_table(checks: Sequence[dict[str, Any]]) -> str:
    if not checks:
        return "<p class=empty>no checks</p>"
    rows = "".join(
        f"<tr><th>{html.escape(str(c['name']))}</th><td>{'ok' if c['ok'] else '<b>FAILED</b>'}</td>"
        f"<td>{html.escape(orjson.dumps(c.get('detail'), default=str).decode()[:600])}</td></tr>" for c in checks)
    return f"<table><tr><th>check</th><th></th><th>detail</th></tr>{rows}</table>"


def render(data: dict[str, Any], ack_times: Sequence[float], latencies: Sequence[float]) -> str:
    verdict = "ok" if data.get("verdict") == "ok" else "violated"
    failed = data.get("failed_checks") or []
    parts = [f'<section class="verdict v-{verdict}"><b>Verdict: {verdict.upper()}</b>'
             f"<p>{len(data.get('checks') or [])} final checks, {len(failed)} failed (final and per phase)</p>"
             f"<p>from: {html.escape(str(data.get('verdict_source')))}</p></section>"]
    if failed:
        parts.append("<h2>Failed checks</h2>" + _checks_table(failed))
    parts.append("<h2>Verdict per phase</h2><table><tr><th>phase</th><th>at (s)</th><th>took (s)</th><th>checks</th>"
                 "</tr>" + "".join(
                     f"<tr><th>{html.escape(p['label'])}</th><td class=n>{p['at_s']}</td><td class=n>{p['took_s']}</td>"
                     f"<td>{'ok' if p['ok'] else '<b>FAILED</b>'} ({len(p['checks'])})</td></tr>"
                     for p in data.get("phases") or []) + "</table>")
    parts.append("<h2>Final checks</h2>" + _checks_table(data.get("checks") or []))
    summary = [(k.replace("_", " "), data[k]) for k in (
        "viewers", "connected", "shops", "procs", "time_factor", "timeline", "started_at", "duration_s", "orders",
        "orders_by_status", "orders_by_fate", "after_sales_paths", "late_payments", "lucky_bags",
        "chat_private_sent", "chat_private_blocked", "webhook_deliveries", "latency_ms", "connect_ms") if k in data]
    parts += ["<h2>Summary</h2>", _kv_table(summary)]
    lat_rows = [(p["label"], p["summary"]["latency_ms"]) for p in data.get("phases") or []
                if isinstance(p.get("summary", {}).get("latency_ms"), dict)]
    if lat_rows:
        parts.append(_grid("Ack latency per phase (ms)", ["p50", "p95", "p99", "max"], lat_rows))
    by_phase = data.get("errors_by_phase") or {}
    parts.append("<h2>Errors by code</h2>" + (_kv_table(sorted(by_phase.items())) if by_phase else "<p>none</p>"))
    samples = data.get("timeline_samples") or []
    xs = [float(s["t"]) for s in samples]
    charts = [acks_over_time(list(ack_times), "Acks over time (buys, chat, lucky-bag entries)"),
              latency_histogram(list(latencies)),
              series_chart("Open connections", xs, {
                  "server (live_socket_connections)": [float(s.get("server_connections", 0)) for s in samples],
                  "load tester": [float(s.get("client_open", 0)) for s in samples]}, "connections"),
              series_chart("Errors (cumulative, every code)", xs, {"errors": [float(s.get("errors", 0))
                                                                              for s in samples]}, "errors"),
              series_chart("After-sales cases by status", xs, {
                  st: [float(s.get("after_sales", {}).get(st, 0)) for s in samples] for st in CASE_STATUSES}, "cases")]
    marks = "".join(f"<li>{p['at_s']:.1f}s {html.escape(p['label'])}</li>" for p in data.get("phases") or [])
    parts.append(f'<h2>Timeline</h2><ul>{marks}</ul><div class="charts">{"".join(charts)}</div>')
    return page(f"live.loadtest double11 — {data.get('viewers')} viewers", parts, data)
