"""Blocking jobs of concurrent callers go to a thread together (a restart's 1,000 decrypts
and store writes): each caller still gets its own result, or its own exception."""

from __future__ import annotations

import asyncio
import threading

import pytest

from zapgate.sessions.thread_batch import ThreadBatch


async def test_concurrent_jobs_share_hand_offs_and_each_gets_its_result() -> None:
    batch = ThreadBatch(max_jobs=16)
    loop_thread = threading.get_ident()

    def job(n: int) -> tuple[int, int]:
        return n * n, threading.get_ident()

    results = await asyncio.gather(*(batch.run(lambda n=n: job(n)) for n in range(100)))
    assert [square for square, _ in results] == [n * n for n in range(100)]
    assert all(thread != loop_thread for _, thread in results)  # never on the event loop
    assert batch.handoffs == 7  # 100 jobs, 16 a hand-off: not one each


async def test_a_failing_job_fails_its_caller_only() -> None:
    batch = ThreadBatch()

    def fail() -> int:
        raise FileNotFoundError("gone")

    outcomes = await asyncio.gather(
        batch.run(lambda: 1), batch.run(fail), batch.run(lambda: 3), return_exceptions=True
    )
    assert outcomes[0] == 1
    assert outcomes[2] == 3
    assert isinstance(outcomes[1], FileNotFoundError)
    assert batch.handoffs == 1
    with pytest.raises(FileNotFoundError):
        await batch.run(fail)
