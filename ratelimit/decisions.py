"""What `Scheduler.due` hands the driver, and what `Scheduler.stats` reports."""

from __future__ import annotations

from dataclasses import dataclass

from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.waiting import Waiting


@dataclass(frozen=True)
class Release:
    """Send this now: show "composing" for `typing_seconds` (0: none), then send, then report
    the result with `on_sent`, `on_failed` or `on_not_sent`. `typing_seconds` is the typing
    time for this text and ends at the planned send time; a late driver's release is
    re-planned from the moment it came, so the gap before the send is never shortened."""

    message: Outgoing
    typing_seconds: float
    scheduled_at: float  # when the release was planned; clock() - scheduled_at = lateness


@dataclass(frozen=True)
class Expiry:
    """The message reached its expiry while it waited; it will never be released."""

    message: Outgoing


@dataclass(frozen=True)
class AutoPause:
    """The scheduler paused the instance on a ban signal it saw itself (a falling delivery
    rate, found when the next release was due). Resume with `Scheduler.resume`."""

    instance: str
    reason: str


Decision = Release | Expiry | AutoPause


@dataclass(frozen=True)
class InstanceStats:
    ready: bool
    paused_reason: str | None
    queued: int  # waiting messages, scheduled ones included; not the one in flight
    in_flight: str | None  # the message id released and not yet reported
    sent_today: int
    day_cap: int  # today's cap: per_day, or less during warm-up
    warmup_day: int  # 1 on the day warm-up started; >= warmup_days once it is over
    new_contacts_today: int
    remaining_minute: int
    remaining_hour: int
    remaining_today: int
    remaining_new_contacts_today: int
    next_release_at: float | None  # when the next message is released (None: nothing due)
    # When it is sent, after typing; when nothing is planned (not due yet, paused, not
    # connected) the earliest it may go. None only when nothing is queued.
    next_send_at: float | None
    delivery_rate: float | None  # delivered share of the recent sends past the receipt grace
    delivery_sample: int  # how many sends that share is over
    failures_in_a_row: int
    waiting: Waiting | None = None  # why the next message waits (None: nothing queued)
