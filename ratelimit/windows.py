"""Exact sliding-window caps: "at most N sends in any `length` seconds".

A window keeps the timestamps of the sends of its last `length` seconds, oldest first. When it
already holds N of them, the next send may happen only once the N-th newest has left:
at `times[-N] + length`. The check is exact (no buckets, no leaky approximation), and a cap is
never exceeded over *any* window position, not just aligned ones.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable


class SlidingWindow:
    __slots__ = ("_times", "length")

    def __init__(self, length: float, times: Iterable[float] = ()) -> None:
        self.length = length
        self._times: deque[float] = deque(sorted(times))

    def add(self, t: float) -> None:
        times = self._times
        if times and t < times[-1]:  # the clock stepped back: keep the order anyway
            position = bisect.bisect_right(times, t)
            times.insert(position, t)
        else:
            times.append(t)
        self.prune(t)

    def prune(self, now: float) -> None:
        """Forget sends that no window ending at `now` or later can hold."""
        times, horizon = self._times, now - self.length
        while times and times[0] <= horizon:
            times.popleft()

    def count(self, now: float) -> int:
        """Sends in the window (now - length, now]."""
        self.prune(now)
        return len(self._times)

    def free_at(self, cap: int) -> float:
        """The earliest time a send keeps at most `cap` sends in every window; -inf if now."""
        times = self._times
        if len(times) < cap:
            return float("-inf")
        return times[-cap] + self.length

    def times(self) -> list[float]:
        return list(self._times)
