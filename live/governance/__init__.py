"""Governance (商家入驻, violations, deposits, appeals, 公示): see docs/governance.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Gauge

from live.core.errors import log_loop_error
from live.core.ids import utcnow
from live.governance import findings
from live.governance.service import Governance

log = logging.getLogger(__name__)
FULL_PASS_S = 60.0
MARGIN_S = 30.0
SWEEP_BATCH = 500


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
        # Most rounds look only at orders whose SQL row changed since the last round (minus a
        # margin for the clocks of the processes that wrote them); a full pass every FULL_PASS_S
        # mends anything missed and refreshes the reconcile gauge.
        mark: datetime | None = None
        last_full = -FULL_PASS_S
        while not stop.is_set():
            try:
                started = utcnow()  # wall clock: orders.updated_at is written from it
                full = mark is None or time.monotonic() - last_full >= FULL_PASS_S
                if await gov.ledger.sweep(SWEEP_BATCH, since=None if full else mark) < SWEEP_BATCH:
                    mark = started - timedelta(seconds=MARGIN_S)  # caught up: move on
                await findings.sweep(gov)
                if full:
                    last_full = time.monotonic()
                    unbalanced.set(await gov.ledger.unbalanced())
            except Exception as e:
                log_loop_error(log, "ledger sweep failed", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), svc.settings.ledger_sweep_s)

    svc.add_loop("ledger-sweeper", sweep_loop, "background")
