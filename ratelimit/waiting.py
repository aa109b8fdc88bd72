"""Why a queued message waits, and the earliest time it can leave the queue.

`Scheduler.waiting` answers it from the same rules `Instance.plan` releases by, so a report
never disagrees with a release: the time is the planned release for the instance's next
message, and a lower bound for every other one (no release happens before it, whatever
arrives meanwhile, unless the policy changes or a released message is reported not sent).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WaitReason(enum.Enum):
    """What holds a message back. The names match `WaitingReason` in message.proto."""

    DUE = "due"  # nothing: it is being released now
    SEND_AT = "send_at"  # its own send_at is ahead
    GAP = "gap"  # the pause after the instance's previous send (min gap + jitter)
    MINUTE_CAP = "minute_cap"
    HOUR_CAP = "hour_cap"
    DAY_CAP = "day_cap"
    WARMUP = "warmup"  # the day's cap, lowered by warm-up, is used up
    NEW_CONTACT_CAP = "new_contact_cap"
    QUIET_HOURS = "quiet_hours"
    IN_FLIGHT = "in_flight"  # another message of the instance is being sent
    CHAT_ORDER = "chat_order"  # an earlier message to the same chat goes first
    QUEUE = "queue"  # messages to other chats rank before it (priority, then age)
    PAUSED = "paused"
    NOT_CONNECTED = "not_connected"


@dataclass(frozen=True)
class Waiting:
    message_id: str
    reason: WaitReason
    # Epoch seconds: the message is not released before this. For PAUSED and NOT_CONNECTED,
    # the earliest it could go once resumed or connected.
    next_attempt_at: float
