"""The readers-writer gate of a worker's neonize calls (sessions/gate.py), with real threads.

Orderings are forced with events and the gate's own counters, never with sleeps; the one
kind of check that must wait ("this thread is still blocked") waits briefly and can only
pass wrongly, never fail wrongly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from zapgate.sessions.gate import Gate

TIMEOUT = 10.0
STILL_BLOCKED = 0.2  # how long a thread that must be blocked is watched


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Holder:
    """A thread that enters the gate, records it, and leaves when told."""

    def __init__(self, gate: Gate, name: str, *, write: bool, log: list[str]) -> None:
        self.entered = threading.Event()
        self.leave = threading.Event()
        self._gate, self._name, self._write, self._log = gate, name, write, log
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._gate.writing() if self._write else self._gate.reading():
            self._log.append(self._name)
            self.entered.set()
            assert self.leave.wait(TIMEOUT)

    def release(self) -> None:
        self.leave.set()
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive()


@contextmanager
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    try:
        yield started
    finally:
        for holder in started:
            holder.leave.set()


def test_readers_hold_the_gate_together() -> None:
    gate = Gate()
    both_inside = threading.Barrier(3, timeout=TIMEOUT)

    def read() -> None:
        with gate.reading():
            both_inside.wait()  # breaks (and fails the test) unless both readers are inside

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    both_inside.wait()
    for thread in threads:
        thread.join(TIMEOUT)
    assert gate.readers == 0


def test_a_writer_excludes_readers_and_other_writers() -> None:
    gate = Gate()
    log: list[str] = []
    with holders() as started:
        lease = gate.acquire_write()
        started += [Holder(gate, "reader", write=False, log=log)]
        started += [Holder(gate, "writer", write=True, log=log)]
        wait_until(lambda: gate.waiting_readers == 1 and gate.waiting_writers == 1)
        assert not started[0].entered.wait(STILL_BLOCKED)
        assert not started[1].entered.wait(STILL_BLOCKED)
        lease.release()
        assert started[0].entered.wait(TIMEOUT)
        started[0].release()
        assert started[1].entered.wait(TIMEOUT)
        started[1].release()
    assert log == ["reader", "writer"]


def test_a_writer_waits_for_the_readers_inside() -> None:
    gate = Gate()
    log: list[str] = []
    with holders() as started:
        reader = Holder(gate, "reader", write=False, log=log)
        started.append(reader)
        assert reader.entered.wait(TIMEOUT)
        writer = Holder(gate, "writer", write=True, log=log)
        started.append(writer)
        wait_until(lambda: gate.waiting_writers == 1)
        assert not writer.entered.wait(STILL_BLOCKED)
        reader.release()
        assert writer.entered.wait(TIMEOUT)
        writer.release()
    assert log == ["reader", "writer"]


def test_a_waiting_writer_is_not_overtaken_by_new_readers() -> None:
    gate = Gate()
    log: list[str] = []
    with holders() as started:
        first = Holder(gate, "first reader", write=False, log=log)
        assert first.entered.wait(TIMEOUT)
        writer = Holder(gate, "writer", write=True, log=log)
        wait_until(lambda: gate.waiting_writers == 1)
        late = Holder(gate, "late reader", write=False, log=log)
        started += [first, writer, late]
        wait_until(lambda: gate.waiting_readers == 1)
        assert not late.entered.wait(STILL_BLOCKED)
        first.release()
        assert writer.entered.wait(TIMEOUT)
        writer.release()
        assert late.entered.wait(TIMEOUT)
        late.release()
    assert log == ["first reader", "writer", "late reader"]


def test_a_waiting_reader_goes_before_the_next_writer() -> None:
    """Forty queued instance starts must not starve a cheap call: a reader waits for at most
    the one write phase in progress when it arrived."""
    gate = Gate()
    log: list[str] = []
    with holders() as started:
        current = gate.acquire_write()
        queued = [Holder(gate, f"writer {n}", write=True, log=log) for n in range(3)]
        started += queued
        wait_until(lambda: gate.waiting_writers == 3)
        reader = Holder(gate, "reader", write=False, log=log)
        started.append(reader)
        wait_until(lambda: gate.waiting_readers == 1)
        current.release()
        assert reader.entered.wait(TIMEOUT)
        assert not any(writer.entered.wait(STILL_BLOCKED) for writer in queued)
        reader.release()
        for writer in queued:
            writer.leave.set()  # each leaves as soon as it gets in; they still go one by one
        for writer in queued:
            writer.release()
    assert log[0] == "reader"
    assert sorted(log[1:]) == ["writer 0", "writer 1", "writer 2"]


def test_a_lease_is_released_from_another_thread_once() -> None:
    gate = Gate()
    lease = gate.acquire_write()
    other = threading.Thread(target=lease.release)
    other.start()
    other.join(TIMEOUT)
    assert lease.released
    assert not gate.write_locked
    second = gate.acquire_write()
    lease.release()  # a late, repeated release must not end someone else's write phase
    assert gate.write_locked
    second.release()
    with gate.reading():
        assert gate.readers == 1


def test_the_gate_is_free_again_after_an_exception() -> None:
    gate = Gate()
    with pytest.raises(RuntimeError), gate.writing():
        raise RuntimeError("a failing lifecycle call")
    with pytest.raises(RuntimeError), gate.reading():
        raise RuntimeError("a failing call")
    assert (gate.readers, gate.write_locked) == (0, False)
    with gate.writing():
        assert gate.write_locked


def test_many_threads_never_see_a_writer_beside_anyone() -> None:
    gate = Gate()
    inside = {"readers": 0, "writers": 0}
    count_lock = threading.Lock()
    violations: list[str] = []

    def enter(kind: str) -> None:
        with count_lock:
            inside[kind] += 1
            if inside["writers"] > 1 or (inside["writers"] and inside["readers"]):
                violations.append(f"{inside}")

    def leave(kind: str) -> None:
        with count_lock:
            inside[kind] -= 1

    def work(n: int) -> None:
        for i in range(200):
            kind = "writers" if (n + i) % 5 == 0 else "readers"
            with gate.writing() if kind == "writers" else gate.reading():
                enter(kind)
                time.sleep(0)
                leave(kind)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert violations == []
    assert (gate.readers, gate.write_locked, gate.waiting_readers, gate.waiting_writers) == (
        0,
        False,
        0,
        0,
    )
