"""Handles a stream's items concurrently across keys and in arrival order within a key.

The events of one worker arrive on one stream. Handled one after the other, each waited
for its state store commit before the next could start, so the CONNECTED transitions of a
thousand restored instances were committed one or two at a time; handled concurrently
(across instances) they share group commits. One instance's events still run strictly in
order, each after the previous one finished, and at most `limit` run at once: the reader
waits for room, which keeps the stream's flow control (a slow core slows the worker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

# Events in flight per stream: enough to fill large group commits.
LIMIT = 256


class KeyOrder:
    def __init__(self, limit: int = LIMIT) -> None:
        self._room = asyncio.Semaphore(limit)
        self._tails: dict[str, asyncio.Task[None]] = {}  # each key's last handler
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, key: str, handle: Callable[[], Awaitable[None]]) -> None:
        """Starts `handle()` once the key's earlier items are handled; waits while `limit`
        items are in flight. `handle` deals with its own errors."""
        await self._room.acquire()
        task = asyncio.create_task(self._run(self._tails.get(key), handle))
        self._tails[key] = task
        self._running.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    async def _run(
        self, previous: asyncio.Task[None] | None, handle: Callable[[], Awaitable[None]]
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own
        await handle()

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        self._room.release()
        self._running.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def drain(self) -> None:
        """Waits until every item submitted so far is handled."""
        while self._running:
            await asyncio.wait(list(self._running))

    async def cancel(self) -> None:
        for task in list(self._running):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._running, return_exceptions=True)
