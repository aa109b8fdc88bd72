"""The core's side of a worker pool in tests: records the events of real worker processes."""

from __future__ import annotations

import asyncio

from zapgate.sessions import events as ev
from zapgate.sessions.pool import LostRun


class Recorder:
    """The core's side of a pool: records events; can be told to fail or to hang."""

    def __init__(self) -> None:
        self.events: list[ev.EngineEvent] = []
        self.fail_next = 0
        self.arrived = asyncio.Event()
        self.lost: list[LostRun] = []
        self.lost_reported = asyncio.Event()
        self.hang_on_lost = False

    async def on_event(self, run_id: int, event: ev.EngineEvent) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError(f"the core choked on {type(event).__name__}")
        self.events.append(event)
        self.arrived.set()

    async def on_worker_lost(self, lost: list[LostRun]) -> None:
        self.lost += lost
        self.lost_reported.set()
        if self.hang_on_lost:  # like a supervisor waiting on an instance lock
            await asyncio.Event().wait()

    async def wait_for(self, kind: type[ev.EngineEvent]) -> ev.EngineEvent:
        for _ in range(500):
            found = [e for e in self.events if isinstance(e, kind)]
            if found:
                return found[-1]
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        raise AssertionError(f"no {kind.__name__} among {self.events}")
