"""The load generator as the rig runs it, inside its namespace:
``python -m bench.rig.load SCENARIO --url http://LB ...`` (the options of ``python -m live.loadtest``).

For the scenarios whose driver takes :class:`~live.loadtest.scenarios.Hooks` it prints one line,
``RIG traffic``, when every viewer has joined and the traffic is about to begin, so the rig
injects its faults into the traffic and not into the set-up. Other scenarios run as
``python -m live.loadtest`` would (the rig then times its faults from the load's start).
Exit status: that of ``python -m live.loadtest``.
"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console

from live.loadtest import __main__ as cli
from live.loadtest.scenarios import SCENARIOS, Hooks, run

TRAFFIC_MARK = "RIG traffic"


async def _mark() -> None:
    print(TRAFFIC_MARK, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SCENARIOS:
        return cli.main(argv)
    a = cli.parser().parse_args(argv)
    try:
        report = asyncio.run(run(cli.to_config(a), Hooks(after_join=_mark)))
    except Exception as e:
        print(f"load test failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    cli.write_outputs(report, a.json, a.html)
    if not a.quiet:
        Console(width=120).print_json(data={k: v for k, v in report.data.items()
                                            if k in ("verdict", "verdict_source", "sold", "lost_orders",
                                                     "duplicate_orders", "oversold", "acks", "errors")})
    return 1 if report.data.get("verdict") == "violated" else 0


if __name__ == "__main__":
    sys.exit(main())
