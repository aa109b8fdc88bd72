"""Caps on group actions, per instance: groups created per day, participants added per hour
and per day (rolling windows). WhatsApp bans numbers that create many groups (whatsmeow's
temporary ban reason 103, "created too many groups") or pull many people who do not know
them into groups (the same cold-contact signal as reason 101). Pure and clock-injected; the
one place these caps are enforced (gateway/groups.py asks it before every engine call)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from zapgate.ratelimit.policy import SendPolicy

HOUR, DAY = 3_600.0, 86_400.0
Windows = tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class Grant:
    granted: int  # actions allowed now (and counted)
    retry_after: float  # seconds until one more would fit (0 when all were granted)


@dataclass(frozen=True)
class GroupRoom:
    """What an instance may still do now (GetInstanceStats)."""

    creations_day: int
    adds_hour: int
    adds_day: int


class GroupPacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._created: dict[str, deque[tuple[float, int]]] = {}
        self._added: dict[str, deque[tuple[float, int]]] = {}

    def restore(
        self, key: str, created: list[tuple[float, int]], added: list[tuple[float, int]]
    ) -> None:
        """What the instance did before this process started ((time on this clock, count),
        oldest first), ahead of anything counted since."""
        for spent_by, earlier in ((self._created, created), (self._added, added)):
            spent = spent_by.setdefault(key, deque())
            spent.extendleft(reversed(earlier))

    def take_creation(self, key: str, policy: SendPolicy) -> Grant:
        return self._take(self._created, key, 1, ((DAY, policy.groups_created_per_day),))

    def take_adds(self, key: str, wanted: int, policy: SendPolicy) -> Grant:
        return self._take(self._added, key, wanted, _add_windows(policy))

    def refund_creation(self, key: str) -> None:
        self._refund(self._created, key, 1)

    def refund_adds(self, key: str, count: int) -> None:
        """`count` of the adds granted last were not made (nobody was added or invited)."""
        self._refund(self._added, key, count)

    def room(self, key: str, policy: SendPolicy) -> GroupRoom:
        now = self._clock()
        created = self._created.get(key, deque())
        added = self._added.get(key, deque())
        return GroupRoom(
            creations_day=max(0, policy.groups_created_per_day - _used(created, now - DAY)),
            adds_hour=max(0, policy.participants_added_per_hour - _used(added, now - HOUR)),
            adds_day=max(0, policy.participants_added_per_day - _used(added, now - DAY)),
        )

    def _take(
        self, spent_by: dict[str, deque[tuple[float, int]]], key: str, wanted: int, windows: Windows
    ) -> Grant:
        now = self._clock()
        spent = spent_by.setdefault(key, deque())
        while spent and spent[0][0] <= now - DAY:
            spent.popleft()
        room = min(cap - _used(spent, now - span) for span, cap in windows)
        granted = max(0, min(wanted, room))
        if granted:
            spent.append((now, granted))
        if granted == wanted:
            return Grant(granted, 0.0)
        return Grant(granted, _until_room(spent, now, windows))

    @staticmethod
    def _refund(spent_by: dict[str, deque[tuple[float, int]]], key: str, count: int) -> None:
        spent = spent_by.get(key)
        if not spent or count <= 0:
            return
        at, granted = spent.pop()
        if granted > count:
            spent.append((at, granted - count))


def _add_windows(policy: SendPolicy) -> Windows:
    return (
        (HOUR, policy.participants_added_per_hour),
        (DAY, policy.participants_added_per_day),
    )


def _used(spent: deque[tuple[float, int]], since: float) -> int:
    return sum(count for at, count in spent if at > since)


def _until_room(spent: deque[tuple[float, int]], now: float, windows: Windows) -> float:
    """Seconds until every full window has room for one more action."""
    wait = 0.0
    for span, cap in windows:
        used = _used(spent, now - span)
        for at, count in spent:
            if used < cap:
                break
            if at > now - span:
                used -= count
                wait = max(wait, at + span - now)
    return wait
