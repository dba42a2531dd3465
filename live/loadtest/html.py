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


def acks_over_time(acks_at_s: Sequence[float], title: str = "Acks over time") -> str:
    if not acks_at_s:
        return _empty(title)
    span = max(acks_at_s)
    bin_s = 0.1 if span <= 30 else 1.0
    counts = stats.timeline(acks_at_s, 0.0, bin_s)
    per_s = [c / bin_s for c in counts]
    peak = max(per_s) or 1.0
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_B - PAD_T
    n = len(per_s)
    bw = plot_w / max(1, n)
    rects = "".join(
        f'<rect x="{PAD_L + i * bw:.1f}" y="{H - PAD_B - plot_h * v / peak:.1f}" width="{max(0.8, bw - 0.5):.1f}" '
        f'height="{plot_h * v / peak:.1f}" class="bar2"><title>{i * bin_s:.1f}s: {v:,.0f}/s</title></rect>'
        for i, v in enumerate(per_s) if v)
    total_s = n * bin_s
    xt = [(PAD_L + plot_w * k / 5, f"{total_s * k / 5:.1f}") for k in range(6)]
    return _frame(title + f" (per {bin_s:g} s bin, as rate)", "seconds since start", "acks / s", rects, xt,
                  _yticks(peak))


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


CSS = """body{font:14px/1.45 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;margin:24px;color:#222}
h1{font-size:20px}table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ddd;padding:4px 10px;
text-align:left;vertical-align:top}th{background:#f6f6f6}figure{margin:18px 0}figcaption{font-weight:600}
svg text{font-size:11px;fill:#444}.ax{stroke:#444}.grid{stroke:#eee}.bar{fill:#e4393c}.bar2{fill:#2f7ed8}
.line{fill:none;stroke:#e4393c;stroke-width:2}.lbl{font-size:12px}.ok{color:#0a7a20;font-weight:700}
.violated{color:#c00;font-weight:700}.unknown{color:#a60}.empty{color:#888}pre{background:#f6f6f6;padding:8px;
overflow:auto;max-height:320px}@media(max-width:700px){svg{width:100%;height:auto}}"""


def render_html(data: dict[str, Any], latency_s: Sequence[float], acks_at_s: Sequence[float],
                fanout_s: Sequence[float], chat_fanout_s: Sequence[float] = ()) -> str:
    """The whole page as a string."""
    rows = []
    for k, v in data.items():
        if k in ("acks_per_100ms", "acks_per_second", "audit", "client"):
            continue
        text = orjson.dumps(v).decode() if isinstance(v, (dict, list)) else str(v)
        cls = f' class="{html.escape(str(v))}"' if k == "verdict" else ""
        rows.append(f"<tr><th>{html.escape(k)}</th><td{cls}>{html.escape(text)}</td></tr>")
    charts = [latency_histogram(latency_s), acks_over_time(acks_at_s)]
    if fanout_s:
        charts.append(cdf_chart(fanout_s, "Card fan-out CDF (card created → flash:card at each viewer)"))
    if chat_fanout_s:
        charts.append(cdf_chart(chat_fanout_s, "Chat fan-out CDF (sent → chat:message at observers)"))
    title = f"live.loadtest {data.get('scenario')} — {data.get('viewers')} viewers"
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<table>{''.join(rows)}</table>{''.join(charts)}"
            f"<h2>Full report</h2><pre>{html.escape(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())}</pre>"
            f"</body></html>")
