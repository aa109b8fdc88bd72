"""A worker's watch on its core, in cluster mode. The core pings each worker every few
seconds; a core that stops pinging (paused by SIGSTOP, a frozen VM, a stalled loop) may have
lost its leases without knowing it, and another node is about to connect the same devices.
WhatsApp would then kick one connection with "stream replaced". So the worker stops every
connection it holds itself, well before the leases can have expired (docs/cluster.md,
"Fencing"), and tells the core, which reconnects whatever it still owns once it runs again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

LOOKS_PER_SILENCE = 8  # a silence is noticed at most an eighth of it late


class CoreWatch:
    def __init__(
        self, silence_seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.silence_seconds = silence_seconds
        self._monotonic = monotonic
        self._pinged_at = monotonic()  # the worker just started: its core is alive

    def pinged(self) -> None:
        self._pinged_at = self._monotonic()

    def silent(self) -> bool:
        return self._monotonic() - self._pinged_at >= self.silence_seconds

    async def forever(self, stop_connections: Callable[[], Awaitable[int]]) -> None:
        while True:
            await asyncio.sleep(self.silence_seconds / LOOKS_PER_SILENCE)
            if self.silent():
                stopped = await stop_connections()
                if stopped:
                    log.warning(
                        "the core has not pinged for %.1fs: stopped %d connections",
                        self._monotonic() - self._pinged_at,
                        stopped,
                    )
