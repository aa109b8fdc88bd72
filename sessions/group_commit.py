"""Group commit: the rows of concurrent callers are written in one transaction. A commit
costs about the same for one row or a hundred, and SQLite takes one writer at a time anyway,
so under load this turns many small transactions (and writers queueing on SQLite's lock)
into a few large ones. Each caller still waits until its own row is committed.

It knows nothing of databases (`write` is any batch call), so it lives in sessions/, which
both the core's stores and the worker pool (one StartInstances call for concurrent starts)
build on: sessions/ never imports gateway/ (tests/test_layering.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Row = TypeVar("Row")
Result = TypeVar("Result")

MAX_BATCH = 256


class GroupCommit(Generic[Row, Result]):
    def __init__(
        self, write: Callable[[list[Row]], Awaitable[list[Result]]], max_batch: int = MAX_BATCH
    ) -> None:
        """`write` commits a batch in one transaction and returns one result per row (also
        used for reads: one query for the keys of concurrent callers)."""
        self._write = write
        self._max_batch = max_batch
        self._pending: list[tuple[Row, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, row: Row) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return await future

    async def _write_pending(self) -> None:
        while self._pending:
            most = self._max_batch
            batch, self._pending = self._pending[:most], self._pending[most:]
            try:
                results = await self._write([row for row, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its caller may have been cancelled
                    future.set_result(result)
