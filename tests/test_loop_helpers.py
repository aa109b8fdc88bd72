"""WorkerThread (blocking calls off the event loop, in order) and Wakeup (the dispatcher's
sleep with a timeout)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from zapgate.gateway.sending.wakeup import Wakeup
from zapgate.gateway.store.worker_thread import WorkerThread

LONG = 3600.0  # a sleep that only a wake-up ends (within the test's own time limit)


async def test_worker_thread_runs_calls_in_order_on_its_own_thread() -> None:
    seen: list[tuple[int, str]] = []
    lifecycle: list[str] = []
    worker = WorkerThread(
        "probe", lambda: lifecycle.append("setup"), lambda: lifecycle.append("teardown")
    )

    def call(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    results = await asyncio.gather(*(worker.run(lambda n=n: call(n)) for n in range(50)))
    worker.close()
    assert results == [n * n for n in range(50)]
    assert seen == [(n, "probe") for n in range(50)]
    assert lifecycle == ["setup", "teardown"]


async def test_worker_thread_hands_exceptions_to_the_caller_and_goes_on() -> None:
    worker = WorkerThread("probe", lambda: None, lambda: None)

    def fail() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        await worker.run(fail)
    assert await worker.run(lambda: "next") == "next"
    worker.close()


async def test_a_cancelled_caller_does_not_break_the_thread() -> None:
    worker = WorkerThread("probe", lambda: None, lambda: None)
    gate = threading.Event()
    waiting = asyncio.ensure_future(worker.run(gate.wait))
    await asyncio.sleep(0)
    waiting.cancel()
    gate.set()
    assert await worker.run(lambda: 7) == 7  # the late result of the cancelled call is dropped
    worker.close()


async def test_wakeup_ends_a_sleep_early() -> None:
    wakeup = Wakeup()
    sleeper = asyncio.ensure_future(wakeup.wait(LONG))
    await asyncio.sleep(0)
    assert not sleeper.done()
    wakeup.set()
    await asyncio.wait_for(sleeper, 10)


async def test_a_wakeup_before_the_sleep_is_not_lost_and_counts_once() -> None:
    wakeup = Wakeup()
    wakeup.set()
    wakeup.set()
    await asyncio.wait_for(wakeup.wait(LONG), 10)  # returns at once
    second = asyncio.ensure_future(wakeup.wait(LONG))
    await asyncio.sleep(0.05)
    assert not second.done()  # the earlier calls were used up by the first sleep
    wakeup.set()
    await asyncio.wait_for(second, 10)


async def test_without_a_wakeup_the_sleep_ends_at_its_limit() -> None:
    wakeup = Wakeup()
    await asyncio.wait_for(wakeup.wait(0.01), 10)
