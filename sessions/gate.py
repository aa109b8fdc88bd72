"""A readers-writer gate for the neonize calls of one worker process.

neonize keeps its clients in Go maps without a lock (docs/engine.md, hazard 1): creating,
connecting or stopping a client writes those maps, every other call reads them. Lifecycle
calls therefore take the gate as writers (alone), all other calls as readers (together).

The gate is phase-fair: a reader that arrives while a writer holds or waits for the gate
enters at the end of that one write phase, before any further writer; a writer waits only for
the readers already inside. So a burst of instance starts cannot starve cheap calls, and a
steady stream of calls cannot starve a start or stop.

Threads only: neonize calls block, so they run in threads. A write lease may be released from
any thread, and more than once, because the end of a connect's write phase is signalled by
whichever neonize callback arrives first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


class Gate:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._readers = 0  # readers inside
        self._writing = False
        self._waiting_writers = 0
        self._waiting_readers = 0
        # Readers waiting at the end of a write phase, let in before the next writer.
        self._admitted = 0
        self._write_phases = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        self._acquire_read()
        try:
            yield
        finally:
            self._release_read()

    def acquire_write(self) -> WriteLease:
        """Blocks until this thread may write; `release()` the lease (from any thread)."""
        with self._lock:
            self._waiting_writers += 1
            self._lock.wait_for(self._writer_may_enter)
            self._waiting_writers -= 1
            self._writing = True
        return WriteLease(self)

    def writing(self) -> WriteLease:
        """`with gate.writing():` — a write lease released at the end of the block."""
        return self.acquire_write()

    @property
    def readers(self) -> int:
        return self._readers

    @property
    def waiting_readers(self) -> int:
        return self._waiting_readers

    @property
    def waiting_writers(self) -> int:
        return self._waiting_writers

    @property
    def write_locked(self) -> bool:
        return self._writing

    def _writer_may_enter(self) -> bool:
        return not self._writing and self._readers == 0 and self._admitted == 0

    def _acquire_read(self) -> None:
        with self._lock:
            if self._writing or self._waiting_writers:
                self._wait_for_write_phase_end()
            self._readers += 1

    def _wait_for_write_phase_end(self) -> None:
        arrived_in = self._write_phases
        self._waiting_readers += 1
        self._lock.wait_for(lambda: self._write_phases > arrived_in)
        self._waiting_readers -= 1
        self._admitted -= 1

    def _release_read(self) -> None:
        with self._lock:
            self._readers -= 1
            if self._readers == 0:
                self._lock.notify_all()

    def _release_write(self) -> None:
        with self._lock:
            self._writing = False
            self._write_phases += 1
            # Every reader waiting now arrived during this phase: it goes before the next
            # writer. No writer can enter until they have, so none is counted twice.
            self._admitted += self._waiting_readers
            self._lock.notify_all()


class WriteLease:
    """Exclusive hold on a gate. `release()` is idempotent and thread-safe."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._released = False
        self._release_lock = threading.Lock()

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self._gate._release_write()

    def __enter__(self) -> WriteLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
