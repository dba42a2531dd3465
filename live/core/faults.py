"""Test-only fault injection: make the server break a promise once, so that a verdict that is
supposed to catch the breach (``live.loadtest.verdict11``) is shown able to fail.

The setting ``fault_injection`` names the faults (comma-separated); it is refused at start-up
unless ``LIVE_TEST_FAULTS=1`` is in the environment. Each fault fires once per process:

- ``lose_order``: the order persister drops the first accepted order it would write to SQL (the
  stream entry is acknowledged as if written: the order exists in Redis and in the buyer's ack,
  never in SQL).
- ``double_deadline``: the after-sales sweeper, after firing a case deadline, records the same
  firing a second time (a second ``system`` step in the case's SQL history).
"""

from __future__ import annotations

FAULTS = frozenset({"lose_order", "double_deadline"})


def parse_faults(value: str) -> frozenset[str]:
    """The fault names in ``value`` (comma-separated, blanks ignored); ValueError on an unknown one."""
    names = frozenset(p.strip() for p in value.split(",") if p.strip())
    unknown = names - FAULTS
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
    return names


class Faults:
    """The faults still armed in this process; :meth:`take` disarms one as it fires."""

    def __init__(self, value: str) -> None:
        self._armed = set(parse_faults(value))

    def take(self, name: str) -> bool:
        """True exactly once per process for an injected fault ``name`` (then it is spent)."""
        if name in self._armed:
            self._armed.discard(name)
            return True
        return False
