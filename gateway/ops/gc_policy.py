"""How `zapgate serve` runs Python's garbage collector, once started.

Everything loaded by then (modules, the runtime, caches) lives as long as the process, so
it is frozen: the collector stops scanning it again and again. The young generation is
collected after 50,000 new container objects instead of 700: the gateway's hot paths (the
send scheduler, RPC handlers) make little cyclic garbage, and each young-generation pass
over a large heap showed up as the scheduler's p99 lateness (docs/benchmarks.md, "Scheduler
under load"). Memory held by cycles is still reclaimed, a little later."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
MIDDLE_THRESHOLD = 20  # young passes per middle-generation pass (Python's default: 10)


def settle_after_start() -> None:
    gc.collect()  # nothing already garbage is frozen
    gc.freeze()
    oldest = gc.get_threshold()[2]
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, oldest)
