"""The load generator as the rig runs it, inside its namespace:
``python -m bench.rig.load SCENARIO --url http://LB ...`` (the options of ``python -m live.loadtest``).

For ``flash``, ``soak`` and ``chat`` it prints one line, ``RIG traffic``, when the traffic
begins — once the card is created (flash, soak) or every viewer has joined (chat) — so the rig
injects its faults into the traffic and not into the set-up. Other scenarios run as
``python -m live.loadtest`` would (the rig then times its faults from the load's start).
Exit status: that of ``python -m live.loadtest``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import sys
from typing import Any

from rich.console import Console

from live.loadtest import __main__ as cli
from live.loadtest import scenarios
from live.loadtest.api import Backend, CardCreated

TRAFFIC_MARK = "RIG traffic"
HOOK_HOST_ENV = "RIG_HOOK_HOST"  # the load host's address on the bridge, set by the rig


def _mark() -> None:
    print(TRAFFIC_MARK, flush=True)


async def _after_join() -> None:
    _mark()


class _MarkingBackend(Backend):
    """The driver's backend, saying when the scenario's card exists: a card being created when a
    host dies fails (nginx does not re-send a POST), and the load tester does not retry it."""

    async def create_card(self, stock: int, limit: int | None, price: str = "19.90",
                          title: str = "Double-11 flash card") -> CardCreated:
        created = await super().create_card(stock, limit, price=price, title=title)
        _mark()
        return created


def _receiver_on(host: str) -> None:
    """double11's webhook receiver listens on 127.0.0.1 by default, where the app hosts (other
    namespaces) cannot reach it: make the driver's receiver listen on the load host's address."""
    try:  # by name: a checkout without the scenario runs the other ones
        driver: Any = importlib.import_module("live.loadtest.double11.driver")
    except ImportError:
        return
    receiver = getattr(driver, "WebhookReceiver", None)
    if receiver is not None:
        driver.WebhookReceiver = functools.partial(receiver, host=host)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in scenarios.SCENARIOS:
        if argv and argv[0] == "double11" and os.environ.get(HOOK_HOST_ENV):
            _receiver_on(os.environ[HOOK_HOST_ENV])
        return cli.main(argv)
    a = cli.parser().parse_args(argv)
    hooks = scenarios.Hooks()
    if a.scenario == "chat":
        hooks.after_join = _after_join
    else:
        scenarios.Backend = _MarkingBackend  # type: ignore[misc]  # the driver makes its backend by this name
    try:
        report = asyncio.run(scenarios.run(cli.to_config(a), hooks))
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
