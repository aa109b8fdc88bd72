"""One thread hand-off for the blocking jobs of concurrent callers (file and crypto work that
must stay off the event loop). Each `asyncio.to_thread` costs the loop a future, a wake-up
and a callback; after a restart a thousand instances each want one at the same moment
(decrypt and write a store, make a directory, open a store), so their jobs go to the thread
together, run one after the other there, and each caller gets its own result or exception."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from zapgate.sessions.group_commit import GroupCommit

T = TypeVar("T")

# Jobs of one hand-off: enough to make the hand-off's own cost small, few enough that one
# caller does not wait long for the jobs queued before its own.
MAX_JOBS = 64


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class ThreadBatch:
    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self._jobs: GroupCommit[Callable[[], Any], Any] = GroupCommit(self._run, max_jobs)
        self.handoffs = 0  # thread hand-offs so far (tests)

    async def run(self, job: Callable[[], T]) -> T:
        """`job()` on a thread, with the jobs of other callers waiting at the same time."""
        outcome = await self._jobs.submit(job)
        if isinstance(outcome, _Failed):
            raise outcome.error
        return cast(T, outcome)

    async def _run(self, jobs: list[Callable[[], Any]]) -> list[Any]:
        self.handoffs += 1
        return await asyncio.to_thread(_each, jobs)


def _each(jobs: list[Callable[[], Any]]) -> list[Any]:
    outcomes: list[Any] = []
    for job in jobs:
        try:
            outcomes.append(job())
        except Exception as error:  # that caller's failure, not the others'
            outcomes.append(_Failed(error))
    return outcomes
