"""Readiness of a supervised child: one line to the supervisor once it serves.

``live-server --workers N`` hands each child the write end of a pipe (its number in
``LIVE_READY_FD``); the child writes its pid there when its port listens (a serving process) or
its loops run (a worker), so the supervisor prints the banner only when everything is ready.
"""

from __future__ import annotations

import contextlib
import os

READY_FD_ENV = "LIVE_READY_FD"


def notify_ready() -> None:
    """Tell the supervisor (if any) that this process is ready; once."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if not fd:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), f"{os.getpid()}\n".encode())
        os.close(int(fd))
