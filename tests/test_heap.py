"""The garbage-collector policy a started process applies (``live.app.heap``), in a fresh
interpreter each time (it changes process-wide state)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import gc
from live.app import heap
before = gc.get_threshold()
heap.settle({threshold})
after = gc.get_threshold()
print(before[0], after[0], after[1:] == before[1:], gc.get_freeze_count())
"""


@pytest.mark.parametrize("threshold", [20_000, 0])
def test_settle_freezes_start_up_and_raises_the_young_threshold_or_leaves_python_alone(threshold: int) -> None:
    out = subprocess.run([sys.executable, "-c", CHECK.format(threshold=threshold)], capture_output=True,
                         text=True, check=True).stdout.split()
    before, after, older_same, frozen = int(out[0]), int(out[1]), out[2] == "True", int(out[3])
    assert older_same
    if threshold:
        assert after == threshold and frozen > 1000  # the modules imported so far, at least
    else:
        assert after == before and frozen == 0
