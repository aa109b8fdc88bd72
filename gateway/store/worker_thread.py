"""One thread that runs blocking calls for the event loop, in order. The hand-off is a
C-level queue one way and `call_soon_threadsafe` the other: about a third of the event
loop's CPU per call of `loop.run_in_executor` (which wraps a concurrent.futures.Future
in an asyncio one and chains their callbacks), and the outbox pays it on every batch."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class WorkerThread:
    def __init__(self, name: str, setup: Callable[[], None], teardown: Callable[[], None]) -> None:
        """`setup` runs first on the thread, `teardown` last (when closed)."""
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._setup, self._teardown = setup, teardown
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, call: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, call))
        return future

    def close(self) -> None:
        """Finishes the calls already given, then stops the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        self._setup()
        try:
            while (job := self._jobs.get()) is not None:
                loop, future, call = job
                try:
                    result = call()
                except BaseException as error:
                    _post(loop, _fail, future, error)
                else:
                    _post(loop, _succeed, future, result)
        finally:
            self._teardown()


def _post(loop: asyncio.AbstractEventLoop, *callback: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(*callback)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # its caller may have been cancelled
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
