"""The process's garbage-collector policy, applied once a process has started.

Python's cyclic collector runs its youngest generation every 700 new container objects and, now
and then, a full collection that walks every tracked object. A serving process holds a few
hundred thousand of them from start-up alone (modules, SQLAlchemy's metadata, the guard's and
OCR's models, pools) and adds tens per tap: measured on the buy bench (2-core box, 4,100 acks/s),
collections took 0.49 s of every 5 s — two full collections at ~190 ms each, also the storm's
worst latencies. Once started, what exists is frozen (``gc.freeze``: never walked again, never
freed — it lives as long as the process anyway) and the youngest generation is collected every
``gc_young_threshold`` new objects, so the older generations and full walks come that much more
rarely. Garbage without cycles is still freed at once by reference counting.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def settle(young_threshold: int) -> None:
    """Freeze what start-up built and raise the young generation's threshold (0: leave Python's
    collector as it is)."""
    if young_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    log.info("garbage collector: %d start-up objects frozen, young generation every %d objects",
             gc.get_freeze_count(), young_threshold)
