"""Command line of the load tester (see the *Load tester* section of the wire contract).

    python -m live.loadtest flash --url URL --viewers N --stock S [--taps T] [--limit L] [--json FILE]
    python -m live.loadtest chat  --url URL --viewers N [--messages M] [--interval S]
    python -m live.loadtest soak  --url URL --viewers N --duration S [--rate OPS]
    python -m live.loadtest double11 [--timeline FILE] [--viewers N] [--procs P] [--time-factor F]
                                     [--url URL --admin-token T --payment-secret S] [--json F] [--html F]

Exit status: 0 when the run finished and the server's verdict is not "violated", 1 when it
is violated, 2 on a usage error or a failed run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

    d = sub.add_parser("double11", formatter_class=fmt,
                       help="the whole evening of a sale from a timeline, judged by the server's records")
    d.add_argument("--timeline", type=Path, default=None, help="timeline TOML (default: the shipped double11.toml)")
    d.add_argument("--viewers", type=int, default=None, help="viewers (default: the timeline's [scale] viewers)")
    d.add_argument("--procs", type=int, default=1, help="spread viewers' sockets over this many processes")
    d.add_argument("--time-factor", type=float, default=1.0, help="multiply every time of the timeline by this")
    d.add_argument("--url", default="", help="server under test (default: start one with the timeline's [server])")
    d.add_argument("--admin-token", default=os.environ.get("LIVE_ADMIN_TOKEN", ""),
                   help="moderator credential of --url (default: $LIVE_ADMIN_TOKEN)")
    d.add_argument("--payment-secret", default=os.environ.get("LIVE_PAYMENT_SECRET", ""),
                   help="payment callback key of --url (default: $LIVE_PAYMENT_SECRET)")
    d.add_argument("--server-workers", type=int, default=1, help="--workers of the server it starts itself")
    d.add_argument("--server-env", action="append", default=[], metavar="LIVE_NAME=VALUE",
                   help="a setting of the server it starts itself, e.g. LIVE_DATABASE_URL=postgresql+asyncpg://…")
    d.add_argument("--timeout", type=float, default=30.0, help="seconds for each connect/ack")
    d.add_argument("--judge-timeout", type=float, default=60.0,
                   help="seconds the final judge may wait for the server's records to converge")
    d.add_argument("--phase-judge-timeout", type=float, default=30.0,
                   help="the same after each phase (short: a failing check must not hold up the show)")
    d.add_argument("--seed", type=int, default=11, help="random seed of who does what")
    d.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    d.add_argument("--html", type=Path, default=None, help="write a self-contained HTML report here")
    d.add_argument("--no-progress", action="store_true", help="no live progress")
    d.add_argument("--quiet", action="store_true", help="no final table either")
    return p


def double11_main(a: argparse.Namespace) -> int:
    """``double11``: verdict first; exit 0 only when every check (per phase and final) holds."""
    from live.loadtest.double11.driver import Double11Config
    from live.loadtest.double11.driver import run as run_double11
    from live.loadtest.double11.report import render as render_double11
    from live.loadtest.double11.timeline import TimelineError, load
    from live.loadtest.double11.ui import PhaseUi, render_verdict

    try:
        timeline = load(a.timeline)
    except TimelineError as e:
        print(f"timeline: {e}", file=sys.stderr)
        return 2
    if (a.viewers is not None and a.viewers < 1) or a.procs < 1 or a.time_factor <= 0:
        print("viewers and procs must be ≥ 1, time-factor > 0", file=sys.stderr)
        return 2
    if a.url and not (a.admin_token and a.payment_secret):
        print("--url needs --admin-token and --payment-secret (or LIVE_ADMIN_TOKEN, LIVE_PAYMENT_SECRET)",
              file=sys.stderr)
        return 2
    server_env = dict(kv.split("=", 1) for kv in a.server_env if "=" in kv)
    if len(server_env) != len(a.server_env) or any(not k.startswith("LIVE_") for k in server_env):
        print("--server-env takes LIVE_NAME=VALUE", file=sys.stderr)
        return 2
    cfg = Double11Config(timeline=timeline, server_env=server_env,
                         url=a.url, admin_token=a.admin_token, payment_secret=a.payment_secret,
                         viewers=a.viewers or 0, procs=a.procs, time_factor=a.time_factor, timeout=a.timeout,
                         judge_timeout=a.judge_timeout, phase_judge_timeout=a.phase_judge_timeout,
                         server_workers=a.server_workers, seed=a.seed,
                         progress=not (a.no_progress or a.quiet))
    ui = PhaseUi(timeline, enabled=cfg.progress)
    try:
        with ui:
            result = asyncio.run(run_double11(cfg, ui.update))
    except KeyboardInterrupt:
        return 2
    except Exception as e:
        print(f"double11 failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if a.json is not None:
        a.json.write_bytes(orjson.dumps(result.data, option=orjson.OPT_INDENT_2) + b"\n")
    if a.html is not None:
        a.html.write_text(render_double11(result.data, result.ack_times, result.latencies), encoding="utf-8")
    if not a.quiet:
        render_verdict(result.data, Console())
    return 0 if result.data.get("verdict") == "ok" else 1


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
    if a.scenario == "double11":
        return double11_main(a)
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
