"""Command line of the load tester (see the *Load tester* section of the wire contract).

    python -m live.loadtest flash --url URL --viewers N --stock S [--taps T] [--limit L] [--json FILE]
    python -m live.loadtest chat  --url URL --viewers N [--messages M] [--interval S]
    python -m live.loadtest soak  --url URL --viewers N --duration S [--rate OPS]

Exit status: 0 when the run finished and the server's verdict is not "violated", 1 when it
is violated, 2 on a usage error or a failed run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson
from rich.console import Console

from live.loadtest.html import render_html
from live.loadtest.scenarios import LoadConfig, Report, run
from live.loadtest.ui import render


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    fmt = _DefaultsShown
    p = argparse.ArgumentParser(prog="python -m live.loadtest", description="Double-11 load tester",
                                formatter_class=fmt)
    sub = p.add_subparsers(dest="scenario", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    common.add_argument("--viewers", type=int, default=100, help="Socket.IO viewers to connect")
    common.add_argument("--procs", type=int, default=1, help="spread viewers over this many processes")
    common.add_argument("--ramp", type=float, default=0.0, help="connections per second (0: as fast as allowed)")
    common.add_argument("--concurrency", type=int, default=200, help="connects in flight at once")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds for each connect/ack/card wait")
    common.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    common.add_argument("--html", type=Path, default=None, help="write a self-contained HTML report here")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    common.add_argument("--quiet", action="store_true", help="no final table either")

    f = sub.add_parser("flash", parents=[common], formatter_class=fmt, help="everyone taps buy on one flash card")
    f.add_argument("--stock", type=int, required=True, help="units on the card")
    f.add_argument("--taps", type=int, default=1, help="buy taps per viewer, each with a new request_id")
    f.add_argument("--limit", type=int, default=None, help="limit_per_user of the card (unset: the server's default)")
    f.add_argument("--price", default="19.90", help="card price")
    f.add_argument("--audit-timeout", type=float, default=60.0, help="wait this long for pending_persist == 0")

    c = sub.add_parser("chat", parents=[common], formatter_class=fmt, help="message storm")
    c.add_argument("--messages", type=int, default=5, help="messages per viewer")
    c.add_argument("--interval", type=float, default=0.0, help="seconds between one viewer's messages")
    c.add_argument("--observers", type=int, default=50, help="viewers that time every message they receive")

    s = sub.add_parser("soak", parents=[common], formatter_class=fmt, help="steady mixed traffic for a duration")
    s.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    s.add_argument("--rate", type=float, default=0.0, help="operations per second in total (0: viewers/2)")
    s.add_argument("--stock", type=int, default=100000, help="units on the card")
    s.add_argument("--limit", type=int, default=1000, help="limit_per_user of the card")
    s.add_argument("--audit-timeout", type=float, default=60.0, help="wait this long for pending_persist == 0")
    return p


def to_config(a: argparse.Namespace) -> LoadConfig:
    cfg = LoadConfig(url=a.url, scenario=a.scenario, viewers=a.viewers, procs=a.procs, ramp=a.ramp,
                     concurrency=a.concurrency, timeout=a.timeout, progress=not (a.no_progress or a.quiet))
    for name in ("stock", "taps", "limit", "price", "audit_timeout", "messages", "interval", "observers",
                 "duration", "rate"):
        if hasattr(a, name):
            setattr(cfg, name, getattr(a, name))
    return cfg


def write_outputs(report: Report, json_path: Path | None, html_path: Path | None) -> None:
    """The JSON report and the HTML report, where asked."""
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(report.data, option=orjson.OPT_INDENT_2) + b"\n")
    if html_path is not None:
        r = report.raw
        html_path.write_text(render_html(report.data, r.latency, r.acks_at, r.fanout, r.chat_fanout),
                             encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.viewers < 1 or a.procs < 1 or (a.scenario == "flash" and (a.stock < 1 or a.taps < 1)):
        print("viewers, procs, stock and taps must be ≥ 1", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run(to_config(a)))
    except KeyboardInterrupt:
        return 2
    except Exception as e:
        print(f"load test failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    write_outputs(report, a.json, a.html)
    if not a.quiet:
        render(report.data, Console())
    return 1 if report.data.get("verdict") == "violated" else 0


if __name__ == "__main__":
    sys.exit(main())
