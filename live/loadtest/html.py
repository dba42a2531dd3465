"""A self-contained HTML report: inline SVG charts drawn here, no scripts, no CDN."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import orjson

from live.loadtest import stats

W, H, PAD_L, PAD_B, PAD_T, PAD_R = 640, 260, 56, 36, 14, 14


def _axis_label(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _frame(title: str, xlabel: str, ylabel: str, body: str, xticks: Sequence[tuple[float, str]],
           yticks: Sequence[tuple[float, str]]) -> str:
    """An SVG with axes; ``body`` and ticks are already in pixel coordinates."""
    parts = [f'<figure><figcaption>{html.escape(title)}</figcaption>'
             f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">',
             f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" class="ax"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" class="ax"/>']
    for x, label in xticks:
        parts.append(f'<line x1="{x:.1f}" y1="{H - PAD_B}" x2="{x:.1f}" y2="{H - PAD_B + 4}" class="ax"/>'
                     f'<text x="{x:.1f}" y="{H - PAD_B + 16}" text-anchor="middle">{html.escape(label)}</text>')
    for y, label in yticks:
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(label)}</text>')
    parts.append(body)
    parts.append(f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 4}" text-anchor="middle" class="lbl">'
                 f'{html.escape(xlabel)}</text>'
                 f'<text x="12" y="{(PAD_T + H - PAD_B) / 2}" transform="rotate(-90 12 {(PAD_T + H - PAD_B) / 2})" '
                 f'text-anchor="middle" class="lbl">{html.escape(ylabel)}</text></svg></figure>')
    return "".join(parts)


def _empty(title: str) -> str:
    return f"<figure><figcaption>{html.escape(title)}</figcaption><p class=empty>no samples</p></figure>"


def _yticks(ymax: float, n: int = 4) -> list[tuple[float, str]]:
    plot_h = H - PAD_B - PAD_T
    return [(H - PAD_B - plot_h * i / n, _axis_label(ymax * i / n)) for i in range(n + 1)]


def latency_histogram(latency_s: Sequence[float], title: str = "Ack latency (log-scale bins)") -> str:
    bins = stats.histogram([x * 1000 for x in latency_s], 40)
    if not bins:
        return _empty(title)
    lo, hi = bins[0][0], bins[-1][1]
    peak = max(c for _, _, c in bins) or 1
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_B - PAD_T
    span = math.log10(hi) - math.log10(lo) if hi > lo else 1.0

    def x(v: float) -> float:
        return PAD_L + plot_w * ((math.log10(v) - math.log10(lo)) / span if hi > lo else 0.5)

    rects = []
    for b_lo, b_hi, c in bins:
        if c:
            h = plot_h * c / peak
            x0, x1 = x(b_lo), x(b_hi)
            rects.append(f'<rect x="{x0:.1f}" y="{H - PAD_B - h:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
                         f'height="{h:.1f}" class="bar"><title>{b_lo:.2f}–{b_hi:.2f} ms: {c}</title></rect>')
    xt = []
    decade = math.floor(math.log10(lo))
    while 10 ** decade <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** decade
            if lo <= v <= hi:
                xt.append((x(v), _axis_label(v)))
        decade += 1
    if len(xt) < 2:
        xt = [(x(lo), _axis_label(lo)), (x(hi), _axis_label(hi))]
    return _frame(title, "milliseconds (log scale)", "acks", "".join(rects), xt, _yticks(peak))


def _nice_bin(span_s: float, target_bins: int = 60) -> float:
    """A round bin width (1, 2 or 5 × 10^k s) giving about ``target_bins`` bins over ``span_s``."""
    raw = max(span_s, 1e-3) / target_bins
    decade = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * decade >= raw:
            return float(m * decade)
    return float(10 * decade)


def acks_over_time(acks_at_s: Sequence[float], title: str = "Acks over time") -> str:
    """Acks per second in about 60 bins over the run, however long or short it was (a
    fixed 0.1 s or 1 s bin drew a single bar for a burst that acks in 80 ms)."""
    if not acks_at_s:
        return _empty(title)
    span = max(acks_at_s) - min(0.0, min(acks_at_s))
    bin_s = _nice_bin(span)
    counts = stats.timeline(acks_at_s, 0.0, bin_s)
    counts += [0] * max(0, 10 - len(counts))  # a little empty room on the right of a burst
    per_s = [c / bin_s for c in counts]
    peak = max(per_s) or 1.0
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_B - PAD_T
    n = len(per_s)
    bw = plot_w / max(1, n)
    rects = "".join(
        f'<rect x="{PAD_L + i * bw:.1f}" y="{H - PAD_B - plot_h * v / peak:.1f}" width="{max(0.8, bw - 0.5):.1f}" '
        f'height="{plot_h * v / peak:.1f}" class="bar2"><title>{_secs(i * bin_s)}: {v:,.0f}/s</title></rect>'
        for i, v in enumerate(per_s) if v)
    total_s = n * bin_s
    xt = [(PAD_L + plot_w * k / 5, _secs(total_s * k / 5)) for k in range(6)]
    return _frame(title + f" ({n} bins of {_secs(bin_s)})", "seconds since traffic began", "acks / s", rects, xt,
                  _yticks(peak))


def _secs(v: float) -> str:
    return f"{v:.3g}s" if v < 1 else f"{v:,.1f}s"


def cdf_chart(values_s: Sequence[float], title: str) -> str:
    pts = stats.cdf([v * 1000 for v in values_s], 200)
    if not pts:
        return _empty(title)
    lo = min(0.0, pts[0][0])
    hi = pts[-1][0] if pts[-1][0] > lo else lo + 1
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_B - PAD_T
    path = " ".join(f"{'M' if i == 0 else 'L'}{PAD_L + plot_w * (v - lo) / (hi - lo):.1f},"
                    f"{H - PAD_B - plot_h * f:.1f}" for i, (v, f) in enumerate(pts))
    xt = [(PAD_L + plot_w * k / 5, _axis_label(lo + (hi - lo) * k / 5)) for k in range(6)]
    yt = [(H - PAD_B - plot_h * q, f"{q:.0%}") for q in (0, 0.25, 0.5, 0.75, 1.0)]
    return _frame(title, "milliseconds", "viewers served", f'<path d="{path}" class="line"/>', xt, yt)


CSS = """body{font:14px/1.45 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;margin:24px;
color:#222;max-width:980px}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;
vertical-align:top}th{background:#f6f6f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
table table{margin:0}table table td,table table th{border-color:#eee;padding:2px 8px}
figure{margin:18px 0}figcaption{font-weight:600}
svg text{font-size:11px;fill:#444}.ax{stroke:#444}.grid{stroke:#eee}.bar{fill:#e4393c}.bar2{fill:#2f7ed8}
.line{fill:none;stroke:#e4393c;stroke-width:2}.lbl{font-size:12px}
.verdict{border-radius:8px;padding:14px 18px;margin:12px 0 20px;border:2px solid}
.verdict b{font-size:22px;letter-spacing:.5px}.verdict p{margin:4px 0 0}
.v-ok{background:#eaf7ec;border-color:#0a7a20;color:#0a5a18}
.v-violated{background:#fdecec;border-color:#c00;color:#900}
.v-unknown{background:#fff6e0;border-color:#a60;color:#7a4a00}
.empty{color:#888}details{margin-top:24px}pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:420px}
.charts{display:flex;flex-wrap:wrap;gap:8px 24px}@media(max-width:700px){svg{width:100%;height:auto}}"""

# Labels of the report's keys, in the order the summary shows them (others follow, as they come).
LABELS: dict[str, str] = {
    "scenario": "scenario", "server": "server", "url": "server URL", "started_at": "started at",
    "duration_s": "run time (s)", "viewers": "viewers", "connected": "connected", "procs": "load processes",
    "stock": "stock", "sold": "sold (server)", "oversold": "oversold", "lost_orders": "lost orders",
    "duplicate_orders": "duplicate orders", "over_limit_users": "users over their limit",
    "taps": "taps per viewer", "limit": "limit per user", "acks": "acks", "buys_per_s": "buys / s",
    "messages_per_viewer": "messages per viewer", "sent": "sent", "accepted": "accepted",
    "messages_per_s": "messages / s", "delivered": "delivered", "expected_deliveries": "expected deliveries",
    "delivery_ratio": "delivery ratio", "duration_target_s": "traffic duration (s)", "ops_per_s": "operations / s",
    "buy_acks": "buy acks", "card_create_ms": "card create (ms)", "card_id": "card", "room_id": "room",
}
# Keys shown in their own section (or only in the raw JSON at the end), not in the summary.
SECTIONS = ("verdict", "verdict_source", "latency_ms", "fanout_ms", "errors", "ops", "server_card",
            "client_view", "audit", "client", "acks_per_100ms", "acks_per_second")


def _cell(v: Any) -> str:
    """A value as table cell content: numbers right-aligned, dicts as a small nested table."""
    if isinstance(v, dict):
        if not v:
            return "<td>none</td>"
        inner = "".join(f"<tr><th>{html.escape(str(k))}</th>{_cell(x)}</tr>" for k, x in v.items())
        return f"<td><table>{inner}</table></td>"
    if isinstance(v, list):
        text = ", ".join(str(x) for x in v[:20]) + (f" … ({len(v)} in all)" if len(v) > 20 else "")
        return f"<td>{html.escape(text or 'none')}</td>"
    if v is None:
        return "<td>unknown</td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, float):
        return f'<td class="n">{v:,.2f}</td>'
    if isinstance(v, int):
        return f'<td class="n">{v:,}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in rows) + "</table>"


def _grid(title: str, cols: Sequence[str], rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A table with a header row: one row per item, one column per key."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("", *cols))
    body = "".join(f"<tr><th>{html.escape(name)}</th>"
                   + "".join(_cell(r[c]) if c in r else "<td>—</td>" for c in cols) + "</tr>" for name, r in rows)
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def verdict_box(data: dict[str, Any]) -> str:
    """The answer first: ok / violated / unknown, why, and the numbers it rests on."""
    verdict = str(data.get("verdict") or "unknown")
    if verdict not in ("ok", "violated"):
        verdict = "unknown"
    facts = []
    if "sold" in data and "stock" in data:
        facts.append(f"sold {data['sold']} of {data['stock']}")
    for key in ("oversold", "lost_orders", "duplicate_orders", "over_limit_users"):
        if key in data:
            facts.append(f"{LABELS[key]} {'unknown' if data[key] is None else data[key]}")
    if data.get("delivery_ratio") is not None:
        facts.append(f"delivered {data['delivery_ratio']:.2%} of {data.get('expected_deliveries')}")
    source = data.get("verdict_source") or "no verdict for this run"
    return (f'<section class="verdict v-{verdict}"><b>Verdict: {verdict.upper()}</b>'
            f"<p>{html.escape(', '.join(facts))}</p><p>from: {html.escape(str(source))}</p></section>")


def render_html(data: dict[str, Any], latency_s: Sequence[float], acks_at_s: Sequence[float],
                fanout_s: Sequence[float], chat_fanout_s: Sequence[float] = ()) -> str:
    """The whole page as a string: verdict, summary, latency and errors tables, charts, raw JSON."""
    shown = data | ({"limit": "server default"} if data.get("limit", 0) is None else {})
    summary = [(LABELS.get(k, k.replace("_", " ")), shown[k]) for k in LABELS if k in shown]
    summary += [(k.replace("_", " "), v) for k, v in data.items() if k not in LABELS and k not in SECTIONS]
    parts = [verdict_box(data), "<h2>Summary</h2>", _kv_table(summary)]
    timings = [(name, data[key]) for key, name in (("latency_ms", "ack latency (ms)"),
                                                   ("fanout_ms", "fan-out (ms)")) if isinstance(data.get(key), dict)]
    timings += [(f"op {op} (ms)", row) for op, row in (data.get("ops") or {}).items()]
    if timings:
        cols: list[str] = []
        for _, row in timings:
            cols += [c for c in row if c not in cols]
        parts.append(_grid("Timings", cols, timings))
    errors = data.get("errors") or {}
    parts.append("<h2>Errors by code</h2>" + (_kv_table(sorted(errors.items(), key=lambda kv: -kv[1]))
                                              if errors else "<p>none</p>"))
    checks = [(name, data[key]) for key, name in (("server_card", "the card, as the server holds it"),
                                                  ("client_view", "what the clients were told"),
                                                  ("audit", "the server's audit")) if data.get(key)]
    if checks:
        parts.append("<h2>Server records</h2>" + _kv_table(checks))
    charts = [acks_over_time(acks_at_s), latency_histogram(latency_s)]
    if fanout_s:
        charts.append(cdf_chart(fanout_s, "Card fan-out CDF (card created → flash:card at each viewer)"))
    if chat_fanout_s:
        charts.append(cdf_chart(chat_fanout_s, "Chat fan-out CDF (sent → chat:message at observers)"))
    parts.append('<h2>Charts</h2><div class="charts">' + "".join(charts) + "</div>")
    if data.get("client"):
        parts.append("<h2>Load tester cost</h2>" + _kv_table(list(data["client"].items())))
    return page(f"live.loadtest {data.get('scenario')} — {data.get('viewers')} viewers", parts, data)


def page(title: str, parts: list[str], data: dict[str, Any]) -> str:
    """A self-contained report page: ``title``, the ``parts`` in order, then the whole JSON."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}"
            f"<details><summary>Full report (JSON)</summary>"
            f"<pre>{html.escape(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())}</pre></details>"
            f"</body></html>")


SERIES_COLOURS = ("#e4393c", "#2f7ed8", "#0a7a20", "#a60", "#7b3fb0", "#444", "#d6a400", "#1aa3a3")


def series_chart(title: str, xs: Sequence[float], series: dict[str, Sequence[float]], ylabel: str,
                 xlabel: str = "seconds since the show began") -> str:
    """Several lines over one time axis (a legend under the chart names them by colour)."""
    pts = [(name, list(ys)) for name, ys in series.items() if ys]
    if not xs or not pts:
        return _empty(title)
    x_hi = max(xs) or 1.0
    peak = max((max(ys) for _, ys in pts), default=0.0) or 1.0
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_B - PAD_T
    paths = []
    for k, (name, ys) in enumerate(pts):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        d = " ".join(f"{'M' if i == 0 else 'L'}{PAD_L + plot_w * x / x_hi:.1f},{H - PAD_B - plot_h * y / peak:.1f}"
                     for i, (x, y) in enumerate(zip(xs, ys, strict=False)))
        paths.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"><title>{html.escape(name)}'
                     f"</title></path>")
    xt = [(PAD_L + plot_w * k / 5, _secs(x_hi * k / 5)) for k in range(6)]
    legend = " ".join(f'<span style="color:{SERIES_COLOURS[k % len(SERIES_COLOURS)]}">■ {html.escape(name)}</span>'
                      for k, (name, _) in enumerate(pts))
    return _frame(title, xlabel, ylabel, "".join(paths), xt, _yticks(peak)).replace(
        "</svg></figure>", f"</svg><div>{legend}</div></figure>")
