"""Governance (商家入驻, violations, deposits, appeals, 公示): see docs/governance.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import Gauge

from live.governance import findings
from live.governance.service import Governance

log = logging.getLogger(__name__)


def install(svc: Any) -> None:
    """Build the governance service, its ledger sweeper, and the standing check of listing
    and going live."""
    gov = Governance(svc)
    svc.governance = gov
    svc.rooms.standing = gov.require
    unbalanced = Gauge("live_ledger_unbalanced_orders",
                       "Orders whose paid or refunded amount the shop ledger does not match after a sweep",
                       registry=svc.metrics.registry)

    async def sweep_loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await gov.ledger.sweep()
                await findings.sweep(gov)
                unbalanced.set(await gov.ledger.unbalanced())
            except Exception:
                log.exception("ledger sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), svc.settings.ledger_sweep_s)

    svc.loops.append(("ledger-sweeper", sweep_loop))
