"""A message as the scheduler sees it: who sends it to whom, how urgent, and when."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    instance: str
    recipient: str
    text_length: int  # characters typed before sending (0: no typing, e.g. media alone)
    # Higher first. Within one priority, enqueue order (`seq`). For one recipient, enqueue
    # order always wins: a recipient's queue takes the highest priority among its messages
    # ("priority inheritance"), so an urgent message is never stuck behind a campaign
    # message to the same person, and the two are still sent in the order they were given.
    priority: int
    seq: int  # monotonically increasing enqueue order, assigned by the outbox
    not_before: float  # epoch seconds: the message is not released before this
    expires_at: float | None  # epoch seconds: not sent at or after this; expires instead
    # The outbox knows this recipient already (a message to them was sent before, or they
    # wrote to us). Unknown recipients count against `new_contacts_per_day`. The scheduler
    # itself remembers only the recipients first messaged today.
    known_contact: bool = False
    # Whether a delivery receipt is expected: reactions, edits and deletions get none of
    # their own, so they never count as undelivered sends (which would pause the instance).
    tracks_delivery: bool = True

    def problems(self) -> list[str]:
        found = []
        if not self.message_id:
            found.append("message_id is empty")
        if not self.recipient:
            found.append("recipient is empty")
        if self.text_length < 0:
            found.append("text_length is negative")
        if not math.isfinite(self.not_before):
            found.append("not_before is not a finite time")
        if self.expires_at is not None and math.isnan(self.expires_at):
            found.append("expires_at is not a number")
        return found
