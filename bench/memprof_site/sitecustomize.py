"""Loaded by ``python -m bench.memprof`` into the server it profiles (this folder is put first on
the server's ``PYTHONPATH``; nothing else puts it there): with ``BENCH_MEMPROF_DIR`` set, SIGUSR1
collects garbage and dumps a tracemalloc snapshot to ``<dir>/snap-<n>.pickle`` (n = 0, 1, …),
written under a temporary name and renamed, so the profiler sees only whole files. The first
SIGUSR1 also starts tracing, keeping ``BENCH_MEMPROF_FRAMES`` frames per allocation: tracing
from start-up (``PYTHONTRACEMALLOC``) makes importing the server take minutes, and only what
is allocated after the first snapshot is compared.

The signal handler runs on the main thread between two bytecodes of the event loop's own
thread, so a snapshot never sees a half-made allocation.
"""

from __future__ import annotations

import gc
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

_DIR = os.environ.get("BENCH_MEMPROF_DIR")
_FRAMES = int(os.environ.get("BENCH_MEMPROF_FRAMES", "25"))


def _install(folder: Path, frames: int) -> None:
    taken = 0

    def dump(_signum: int, _frame: FrameType | None) -> None:
        nonlocal taken
        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        snap = tracemalloc.take_snapshot()
        tmp = folder / f"snap-{taken}.tmp"
        snap.dump(str(tmp))
        del snap
        tmp.rename(folder / f"snap-{taken}.pickle")
        taken += 1

    signal.signal(signal.SIGUSR1, dump)


if _DIR:
    _install(Path(_DIR), _FRAMES)
