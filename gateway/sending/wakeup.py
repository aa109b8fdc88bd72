"""A wake-up call for one sleeper with a timeout (the dispatcher's loop). The same as
`asyncio.wait_for(event.wait(), timeout)` without the task that wait_for makes on every
wait: the dispatcher may sleep and wake thousands of times a second under load."""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._called = False
        self._sleeper: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._called = True
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)

    async def wait(self, at_most: float) -> None:
        """Returns when `set` is called, at once if it was since the last wait, or after
        `at_most` seconds."""
        if not self._called:
            loop = asyncio.get_running_loop()
            sleeper = self._sleeper = loop.create_future()
            alarm = loop.call_later(at_most, _ring, sleeper)
            try:
                await sleeper
            finally:
                alarm.cancel()
                self._sleeper = None
        self._called = False


def _ring(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)
