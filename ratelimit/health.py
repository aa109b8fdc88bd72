"""Ban signals the scheduler watches itself: a run of send errors and a falling delivery rate.

(The other ban signals, a temporary ban or a logout, come from the connection and pause the
instance through `Scheduler.pause`.)

Delivery rate: a send is judged once its receipt grace time has passed: delivered if a
delivery (or read) receipt came by the time of judging, undelivered otherwise. The rate is
over the last `delivery_window` judged sends, in send order, and pauses the instance only
once that many have been judged.

Pause reasons are "code: details"; the codes are stable, the details are for people.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from zapgate.ratelimit.errors import StateError

ERROR_RUN = "send_errors"
ERROR_463 = "whatsapp_463"
LOW_DELIVERY = "low_delivery_rate"

# WhatsApp answers 463 when it refuses a message as likely spam (baileys-antiban pauses on
# it): matched as a number of its own in the error text, e.g. "server returned error 463".
_CODE_463 = re.compile(r"(?<![0-9])463(?![0-9])")


@dataclass(frozen=True)
class PauseRules:
    # This many failed sends in a row pause the instance (a success resets the run).
    errors_in_a_row: int = 3
    # A sent message that got no delivery receipt within this time counts as undelivered.
    # Phones that are on receive within seconds; 15 min forgives a phone in a tunnel.
    receipt_grace_seconds: float = 15 * 60
    # Judged over the last `delivery_window` sends older than the grace time; below
    # `min_delivery_ratio` delivered, the instance pauses. A number that WhatsApp restricts
    # keeps sending "one tick" messages that never arrive.
    delivery_window: int = 20
    min_delivery_ratio: float = 0.5


class _Sent:
    __slots__ = ("at", "delivered", "message_id")

    def __init__(self, message_id: str, at: float, delivered: bool) -> None:
        self.message_id = message_id
        self.at = at
        self.delivered = delivered


class SendHealth:
    """Failures in a row, and the recent sends with their receipts."""

    __slots__ = ("_by_id", "_sends", "failures_in_a_row", "rules")

    def __init__(self, rules: PauseRules) -> None:
        self.rules = rules
        self.failures_in_a_row = 0
        # In send order: every send still inside its grace time, and up to
        # `delivery_window` judged ones before them.
        self._sends: deque[_Sent] = deque()
        self._by_id: dict[str, _Sent] = {}

    def sent(self, message_id: str, t: float) -> None:
        self.failures_in_a_row = 0
        record = _Sent(message_id, t, False)
        self._sends.append(record)
        self._by_id[message_id] = record
        self._trim(t)

    def failed(self, error: str) -> str | None:
        """Record a failed send; the pause reason when this failure should pause sending."""
        self.failures_in_a_row += 1
        if _CODE_463.search(error):
            return f"{ERROR_463}: WhatsApp refused a message as spam ({error})"
        if self.failures_in_a_row >= self.rules.errors_in_a_row:
            return f"{ERROR_RUN}: {self.failures_in_a_row} sends failed in a row, last: {error}"
        return None

    def delivered(self, message_id: str) -> bool:
        """A delivery (or read) receipt; False when it changes nothing (a duplicate, or a
        send no longer tracked)."""
        record = self._by_id.get(message_id)
        if record is None or record.delivered:
            return False
        record.delivered = True
        return True

    def judged(self, now: float) -> list[bool]:
        """Delivered or not, for the last `delivery_window` sends past their grace time."""
        self._trim(now)
        deadline = now - self.rules.receipt_grace_seconds
        outcomes = []
        for record in self._sends:
            if record.at > deadline:
                break
            outcomes.append(record.delivered)
        return outcomes

    def delivery_rate(self, now: float) -> tuple[float | None, int]:
        outcomes = self.judged(now)
        if not outcomes:
            return None, 0
        return sum(outcomes) / len(outcomes), len(outcomes)

    def delivery_problem(self, now: float) -> str | None:
        window = self.rules.delivery_window
        if len(self._sends) < window:
            return None  # fewer sends than a window: nothing to judge yet (and nothing to trim)
        outcomes = self.judged(now)
        if len(outcomes) < window:
            return None
        delivered = sum(outcomes)
        if delivered >= self.rules.min_delivery_ratio * window:
            return None
        return (
            f"{LOW_DELIVERY}: {delivered} of the last {window} judged sends were delivered "
            f"within {self.rules.receipt_grace_seconds:g} s"
        )

    def reset(self) -> None:
        """A fresh start after an operator resumes: old evidence does not pause again."""
        self.failures_in_a_row = 0
        self._sends.clear()
        self._by_id.clear()

    def _trim(self, now: float) -> None:
        """Drop judged sends beyond the window (the oldest first)."""
        sends, window = self._sends, self.rules.delivery_window
        deadline = now - self.rules.receipt_grace_seconds
        while len(sends) > window and sends[window].at <= deadline:
            del self._by_id[sends.popleft().message_id]

    def export(self) -> dict[str, Any]:
        return {
            "failures_in_a_row": self.failures_in_a_row,
            "receipts": [[r.message_id, r.at, r.delivered] for r in self._sends],
        }

    def restore(self, state: dict[str, Any]) -> None:
        failures = state.get("failures_in_a_row", 0)
        receipts = state.get("receipts", [])
        if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
            raise StateError("failures_in_a_row must be an integer >= 0")
        if not isinstance(receipts, list) or not all(_is_receipt(item) for item in receipts):
            raise StateError("receipts must be a list of [message id, sent at, delivered]")
        self.failures_in_a_row = failures
        records = sorted((_Sent(m, float(t), d) for m, t, d in receipts), key=lambda r: r.at)
        self._sends = deque(records)
        self._by_id = {r.message_id: r for r in records}


def _is_receipt(item: object) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], str)
        and isinstance(item[1], int | float)
        and not isinstance(item[1], bool)
        and isinstance(item[2], bool)
    )
