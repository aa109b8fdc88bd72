"""What an instance has sent: the sliding minute and hour windows, the local day's totals, and
the pacing state (when the last attempt was, and the random draws for the next slot).

This is the part of the scheduler's state that must survive a restart; `export` and `restore`
convert it to and from plain JSON values.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date
from typing import Any

from zapgate.ratelimit.errors import StateError
from zapgate.ratelimit.policy import TYPING_SPREAD, SendPolicy
from zapgate.ratelimit.windows import SlidingWindow

MINUTE = 60.0
HOUR = 3600.0


@dataclass(frozen=True)
class Slot:
    """The random draws for one send slot, made when the previous attempt ended."""

    gap_fraction: float  # where the gap falls inside [jitter_min, jitter_max], 0..1
    typing_fraction: float  # where the typing factor falls inside 1 +- TYPING_SPREAD, 0..1

    @classmethod
    def draw(cls, rng: random.Random) -> Slot:
        return cls(rng.random(), rng.random())

    def gap(self, policy: SendPolicy) -> float:
        jitter = policy.jitter_max_seconds - policy.jitter_min_seconds
        return policy.min_gap_seconds + policy.jitter_min_seconds + self.gap_fraction * jitter

    def typing_factor(self) -> float:
        return 1 - TYPING_SPREAD + 2 * TYPING_SPREAD * self.typing_fraction


class SendCounters:
    __slots__ = ("day", "hour", "last_attempt_at", "minute", "new_today", "sent_today", "slot")

    def __init__(self, slot: Slot) -> None:
        self.minute = SlidingWindow(MINUTE)
        self.hour = SlidingWindow(HOUR)
        self.day: date | None = None  # the local day `sent_today` and `new_today` belong to
        self.sent_today = 0
        # Recipients first messaged on `day`: known from then on (also after a restart, and
        # whatever the outbox says); the outbox is the durable record of older contacts,
        # see Outgoing.known_contact.
        self.new_today: set[str] = set()
        self.last_attempt_at: float | None = None
        self.slot = slot

    def roll(self, today: date) -> None:
        """Start a new local day when `today` is later than the counted one."""
        if self.day is None or today > self.day:
            self.day, self.sent_today, self.new_today = today, 0, set()

    def sent_on(self, day: date) -> int:
        return self.sent_today if self.day is not None and day <= self.day else 0

    def new_on(self, day: date) -> int:
        return len(self.new_today) if self.day is not None and day <= self.day else 0

    def is_new_today(self, recipient: str) -> bool:
        return recipient in self.new_today

    def record_send(self, t: float, day: date, recipient: str, new_contact: bool) -> None:
        self.roll(day)
        self.minute.add(t)
        self.hour.add(t)
        self.sent_today += 1
        if new_contact:
            self.new_today.add(recipient)

    def attempt_ended(self, t: float, rng: random.Random) -> None:
        """A send or a failed send ended at `t`: the next gap starts now, with fresh draws."""
        self.last_attempt_at = t
        self.slot = Slot.draw(rng)

    def gap_end(self, policy: SendPolicy) -> float:
        if self.last_attempt_at is None:
            return -math.inf
        return self.last_attempt_at + self.slot.gap(policy)

    def window_free_at(self, policy: SendPolicy) -> float:
        return max(self.minute.free_at(policy.per_minute), self.hour.free_at(policy.per_hour))

    def export(self) -> dict[str, Any]:
        return {
            "recent_sends": self.hour.times(),
            "day": None if self.day is None else self.day.isoformat(),
            "sent_today": self.sent_today,
            "new_today": sorted(self.new_today),
            "last_attempt_at": self.last_attempt_at,
            "gap_fraction": self.slot.gap_fraction,
            "typing_fraction": self.slot.typing_fraction,
        }

    def restore(self, state: dict[str, Any]) -> None:
        recent = state.get("recent_sends", [])
        if not isinstance(recent, list) or not all(_is_number(t) for t in recent):
            raise StateError("recent_sends must be a list of epoch seconds")
        day_text = state.get("day")
        try:
            day = None if day_text is None else date.fromisoformat(str(day_text))
        except ValueError:
            raise StateError("day must be an ISO date or null") from None
        sent_today = state.get("sent_today", 0)
        if not isinstance(sent_today, int) or isinstance(sent_today, bool) or sent_today < 0:
            raise StateError("sent_today must be an integer >= 0")
        new_today = state.get("new_today", [])
        if not isinstance(new_today, list) or not all(isinstance(r, str) for r in new_today):
            raise StateError("new_today must be a list of recipients")
        last = state.get("last_attempt_at")
        if last is not None and not _is_number(last):
            raise StateError("last_attempt_at must be epoch seconds or null")
        fractions = [state.get("gap_fraction", 0.5), state.get("typing_fraction", 0.5)]
        if not all(_is_number(f) and 0 <= f <= 1 for f in fractions):
            raise StateError("gap_fraction and typing_fraction must be numbers in [0, 1]")
        times = [float(t) for t in recent]
        self.minute = SlidingWindow(MINUTE, times)
        self.hour = SlidingWindow(HOUR, times)
        self.day, self.sent_today, self.new_today = day, sent_today, set(new_today)
        self.last_attempt_at = None if last is None else float(last)
        self.slot = Slot(float(fractions[0]), float(fractions[1]))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
