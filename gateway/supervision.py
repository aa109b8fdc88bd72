"""The gateway's long-lived tasks, run as one supervised group: the dispatch loop, the
session keeper, event retention, and the like. A task that fails is logged with its name,
counted, and started again after a backoff; one that keeps failing turns health
NOT_SERVING until it has run a while again. `stop` cancels every task and waits for each."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]
HealthHook = Callable[[bool], Coroutine[Any, Any, None]]
# Failures in a row (each within STABLE_SECONDS of its start) before health turns NOT_SERVING.
FAILURES_BEFORE_UNHEALTHY = 3
STABLE_SECONDS = 60.0


class Supervision:
    def __init__(
        self,
        on_health: HealthHook | None = None,
        *,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_health = on_health
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._monotonic = monotonic
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failing: set[str] = set()
        self.failures: Counter[str] = Counter()  # per task name, read by a metric
        self._stopping = False
        self._reports: set[asyncio.Task[None]] = set()

    def start(self, name: str, factory: TaskFactory) -> None:
        """Runs `factory()` until stop(), again after each failure. A task that returns
        normally is done and not restarted."""
        if name in self._tasks and self._tasks[name].done():
            del self._tasks[name]  # it returned: the name may be used again
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        self._tasks[name] = asyncio.create_task(self._keep(name, factory), name=name)

    async def cancel(self, name: str) -> None:
        """Stops one task (if it runs) and waits until it has ended; its name is free again."""
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._set_failing(name, False)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    @property
    def healthy(self) -> bool:
        return not self._failing

    async def _keep(self, name: str, factory: TaskFactory) -> None:
        in_a_row = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = self._monotonic()
            # Still running after a while: it has recovered.
            recovered = loop.call_later(STABLE_SECONDS, self._set_failing, name, False)
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures[name] += 1
                log.exception("supervised task %r failed; restarting it", name)
            else:
                return
            finally:
                recovered.cancel()
            in_a_row = 1 if self._monotonic() - started >= STABLE_SECONDS else in_a_row + 1
            self._set_failing(name, in_a_row >= FAILURES_BEFORE_UNHEALTHY)
            delay = min(self._backoff_cap, self._backoff_base * 2 ** (in_a_row - 1))
            await asyncio.sleep(delay)

    def _set_failing(self, name: str, failing: bool) -> None:
        was_healthy = self.healthy
        if failing:
            self._failing.add(name)
        else:
            self._failing.discard(name)
        if self._on_health is not None and was_healthy != self.healthy:
            report = asyncio.create_task(self._on_health(self.healthy))
            self._reports.add(report)
            report.add_done_callback(self._reports.discard)

    async def stop(self) -> None:
        """Cancels every task and waits until each has ended. Safe to call twice."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._reports, return_exceptions=True)
