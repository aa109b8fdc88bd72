"""Caps on number lookups (CheckNumbers): rolling-window budgets per instance. WhatsApp bans
numbers that probe many others, so lookups are paced like sends; answers already cached cost
nothing and never reach here."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from zapgate.ratelimit.policy import SendPolicy

MINUTE, DAY = 60.0, 86_400.0


@dataclass(frozen=True)
class Grant:
    granted: int  # lookups allowed now (and counted)
    retry_after: float  # when the rest would fit, in seconds (0 when all were granted)


class LookupBudget:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._spent: dict[str, deque[tuple[float, int]]] = {}  # key -> (time, lookups)

    def take(self, key: str, wanted: int, policy: SendPolicy) -> Grant:
        now = self._clock()
        spent = self._spent.setdefault(key, deque())
        while spent and spent[0][0] <= now - DAY:
            spent.popleft()
        windows = ((MINUTE, policy.number_checks_per_minute), (DAY, policy.number_checks_per_day))
        room = min(cap - self._used(spent, now - span) for span, cap in windows)
        granted = max(0, min(wanted, room))
        if granted:
            spent.append((now, granted))
        if granted == wanted:
            return Grant(granted, 0.0)
        return Grant(granted, self._until_room(spent, now, windows))

    @staticmethod
    def _used(spent: deque[tuple[float, int]], since: float) -> int:
        return sum(count for at, count in spent if at > since)

    def _until_room(
        self, spent: deque[tuple[float, int]], now: float, windows: tuple[tuple[float, int], ...]
    ) -> float:
        """Seconds until every full window has room for one more lookup."""
        wait = 0.0
        for span, cap in windows:
            used = self._used(spent, now - span)
            for at, count in spent:
                if used < cap:
                    break
                if at > now - span:
                    used -= count
                    wait = max(wait, at + span - now)
        return wait

    def refund(self, key: str, grant: Grant) -> None:
        """The lookups of `grant` were not made after all (the instance could not ask)."""
        spent = self._spent.get(key)
        if spent and grant.granted and spent[-1][1] == grant.granted:
            spent.pop()

    def forget(self, key: str) -> None:
        self._spent.pop(key, None)
