"""One instance inside the scheduler: its policy, queue, counters and health, and the rule
that says when its next message may be released.

The release rule (typing counted inside the gap)
------------------------------------------------
Every constraint applies to the *send* time S of the next message, never to its release:

    S >= previous attempt + gap          gap = min_gap + uniform(jitter_min, jitter_max),
                                         drawn once, when the previous attempt ended
    S >= when the minute and hour windows have room (exact sliding windows)
    S outside quiet hours, and on a local day whose sent count is below that day's cap
      (warm-up included); pushed to the next local day otherwise
    S >= now + typing                    the typing must fit before the send

The message is released at R = S - typing: the driver shows "composing" for the typing time
and sends at S. So typing eats into the gap instead of adding to it, and a long text takes
longer than the gap only when its typing time is longer than the gap (then S = previous
attempt + typing: "composing" never starts before the previous message went out). Only one
message per instance is in flight, and the driver reports the send when it happened (at S or
a little later), so the caps checked at S still hold at the real send time: windows only
empty out as time passes. (Quiet hours hold for S; a driver late by d seconds may send up to
d seconds into them.)

Which message: the best lane head (see queue.py). If the new-contact cap of the earliest send
day is used up, only known recipients are considered; if only new contacts wait, S moves to
the next local day.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from zapgate.ratelimit.counters import SendCounters, Slot
from zapgate.ratelimit.errors import StateError
from zapgate.ratelimit.health import PauseRules, SendHealth
from zapgate.ratelimit.localtime import LocalCalendar
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.policy import TYPING_SPREAD, SendPolicy, daily_cap, typing_seconds
from zapgate.ratelimit.queue import MessageQueue
from zapgate.ratelimit.waiting import Waiting, WaitReason

STATE_FORMAT = 1


@dataclass(frozen=True)
class _Day:
    """A local day as an interval of epoch seconds, with its cap: most questions about a
    time fall on the day already looked up, and need no time zone arithmetic."""

    start: float
    end: float
    day: date
    cap: int


# The latest of the gap end and the minute and hour windows' free times, with the rule
# behind it (-inf, DUE: none binds). It moves only when the counters do, not with time.
Bound = tuple[float, WaitReason]


class Plan:
    """An instance's next release, with what it was derived from: the local day of the
    earliest send time and the typing time of the chosen message. When nothing but time
    changed since a plan was made, `Instance.replan` keeps its choice of message."""

    __slots__ = (
        "bound",
        "bound_reason",
        "day",
        "detour",
        "known",
        "message",
        "reason",
        "release_at",
        "send_at",
        "typing",
    )

    def __init__(
        self,
        message: Outgoing,
        known: bool,
        release_at: float,
        send_at: float,
        reason: WaitReason,  # the rule that set `release_at`; DUE when nothing holds it back
        day: _Day,
        typing: float,
        detour: bool,  # chosen after the new-contact cap moved the send to a later day
        bound: Bound,  # the gap and window bound it was planned under (see `Instance.bound`)
    ) -> None:
        self.message, self.known, self.reason = message, known, reason
        self.release_at, self.send_at = release_at, send_at
        self.day, self.typing, self.detour = day, typing, detour
        self.bound, self.bound_reason = bound

    def outcome(self) -> tuple[str, bool, float, float, WaitReason]:
        """What the plan decides (for comparing two plans)."""
        return (self.message.message_id, self.known, self.release_at, self.send_at, self.reason)


class InFlight:
    """The released message an instance waits to hear about (at most one)."""

    __slots__ = ("known", "message", "send_at")

    def __init__(self, message: Outgoing, known: bool, send_at: float) -> None:
        self.message, self.known, self.send_at = message, known, send_at


class Instance:
    __slots__ = (
        "_days",
        "_open_day",
        "_open_from",
        "_open_until",
        "armed",
        "cached_plan",
        "calendar",
        "counters",
        "first_reason",
        "first_send",
        "health",
        "in_flight",
        "name",
        "paused",
        "planned_release",
        "policy",
        "queue",
        "ready",
        "soonest_release",
        "token",
        "warmup_day0",
        "warmup_started_at",
    )

    def __init__(
        self,
        name: str,
        policy: SendPolicy,
        warmup_started_at: float,
        rules: PauseRules,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.queue = MessageQueue()
        self.counters = SendCounters(Slot.draw(rng))
        self.health = SendHealth(rules)
        self.ready = False
        self.paused: str | None = None
        self.in_flight: InFlight | None = None
        self.armed: float | None = None  # the time this instance's live heap entry is keyed at
        self.token = 0  # identifies the live heap entry
        self.planned_release: float | None = None  # the release time behind `armed`
        # The plan made when the instance was last armed; it stays right until the state
        # changes (which re-arms) or time brings a message due or expired.
        self.cached_plan: Plan | None = None
        # No message can be released before this (from the last plan): a message that comes
        # due earlier need not wake the instance before it.
        self.soonest_release: float | None = None
        # The earliest send time of any message (from the last plan) and the rule behind it.
        self.first_send: float | None = None
        self.first_reason = WaitReason.DUE
        self._days: list[_Day] = []
        # The open stretch: an interval of one cached local day, outside quiet hours, with
        # room left under that day's cap, so a send at any time in it is not held back by
        # the calendar (`earliest_send(t) == t`) and needs no day lookup. Empty when unknown;
        # it closes when the day is dropped from `_days`, its cap is reached, or the policy
        # or the counters are replaced (`configure`, `restore`).
        self._open_from, self._open_until = math.inf, -math.inf
        self._open_day: _Day | None = None
        self.configure(policy, warmup_started_at)

    def configure(self, policy: SendPolicy, warmup_started_at: float) -> None:
        self.policy = policy
        self.calendar = LocalCalendar(
            policy.timezone, policy.quiet_start_hour, policy.quiet_end_hour
        )
        self.warmup_started_at = warmup_started_at
        self.warmup_day0 = self.calendar.day(warmup_started_at)
        self._days = []
        self._close_open_stretch()

    def can_release(self) -> bool:
        return self.ready and self.paused is None and self.in_flight is None

    def warmup_day(self, day: date) -> int:
        return (day - self.warmup_day0).days + 1

    def day_cap(self, day: date) -> int:
        return daily_cap(self.policy, self.warmup_day(day))

    def local_day(self, t: float) -> _Day:
        days = self._days
        if days and days[0].start <= t < days[0].end:  # most questions fall on this one
            return days[0]
        for known in days:
            if known.start <= t < known.end:
                return known
        day = self.calendar.day(t)
        start = self.calendar.day_start(day)
        end = self.calendar.day_start(day + timedelta(days=1))
        found = _Day(start, end, day, self.day_cap(day))
        if start <= t < end:  # (not so within a microsecond of midnight: don't keep it)
            self._days = [found, *days[:1]]  # today and tomorrow, typically
            open_day = self._open_day
            if open_day is not None and not any(known is open_day for known in self._days):
                self._close_open_stretch()  # (by identity: `replan` compares days with `is`)
        return found

    def _close_open_stretch(self) -> None:
        self._open_from, self._open_until, self._open_day = math.inf, -math.inf, None

    def _open_on(self, day: _Day) -> None:
        """`day` has room and no quiet hours: all of it is open (if it is cached; a day
        that is not may be looked up again as another object, see `replan`)."""
        if self._days and self._days[0] is day:
            self._open_from, self._open_until, self._open_day = day.start, day.end, day

    def earliest_send(self, start: float) -> float:
        """The first time at or after `start` outside quiet hours on a day with room left."""
        return self.earliest_send_why(start)[0]

    def earliest_send_why(self, start: float) -> tuple[float, WaitReason | None]:
        """`earliest_send`, and the rule that moved it last (None: `start` itself)."""
        if self._open_from <= start < self._open_until:
            return start, None
        calendar, t, why = self.calendar, start, None
        if calendar.quiet_end_hour is None:
            # No quiet hours: the loop below would stop at once on a day with room left.
            day = self.local_day(t)
            if self.counters.sent_on(day.day) < day.cap:
                self._open_on(day)
                return t, None
        for _ in range(16):  # two or three rounds settle it; the bound is for odd zones
            moved = calendar.quiet_until(t)
            if moved != t:
                why = WaitReason.QUIET_HOURS
            day = self.local_day(moved)
            if self.counters.sent_on(day.day) >= day.cap:
                moved = day.end
                why = WaitReason.WARMUP if day.cap < self.policy.per_day else WaitReason.DAY_CAP
            if moved == t:
                break
            t = moved
        return t, why

    def plan(self, now: float) -> Plan | None:
        """The next release, if a message is due (ignores pause, readiness and in-flight)."""
        self.queue.promote(now)
        bound = self.bound()
        first, reason = self._first_send(now, bound)
        return self._plan_from(now, first, reason, None, bound)

    def replan(self, previous: Plan, now: float) -> Plan | None:
        """`plan(now)`, for a `previous` plan made when the queue, the counters and the
        policy were as they are now (only time moved, and no message came due or expired
        since): the bounds are re-applied at `now`, and the message chosen then is kept
        unless the earliest send moved to another local day (whose new-contact count may
        differ)."""
        bound = previous.bound, previous.bound_reason  # the counters did not move since
        typing, day = previous.typing, previous.day
        if (
            bound[0] <= now
            and self._open_day is day
            and self._open_from <= now < self._open_until
            and not previous.detour
        ):
            # The usual late driver: nothing holds the message back at `now`, and `now` is
            # in the open stretch of the day it was chosen on. What `_first_send` and
            # `_plan_from` below would compute, without the bound and day look-ups.
            self._note_first_send(now, WaitReason.DUE)
            start = now + typing
            if start > now and not self._open_from <= start < self._open_until:
                send_at, why = self.earliest_send_why(start)
                reason = why or WaitReason.DUE
            else:
                send_at, reason = (start if start > now else now), WaitReason.DUE
            release_at = send_at - typing
            if release_at <= now:
                reason = WaitReason.DUE
            return Plan(
                previous.message,
                previous.known,
                release_at,
                send_at,
                reason,
                day,
                typing,
                False,
                bound,
            )
        first, reason = self._first_send(now, bound)
        return self._plan_from(now, first, reason, previous, bound)

    def _plan_from(
        self, now: float, first: float, reason: WaitReason, previous: Plan | None, bound: Bound
    ) -> Plan | None:
        policy, counters, queue = self.policy, self.counters, self.queue
        day = self.local_day(first)
        detour = False
        if previous is not None and previous.day is day and not previous.detour:
            message, known, typing = previous.message, previous.known, previous.typing
        else:
            allow_new = counters.new_on(day.day) < policy.new_contacts_per_day
            pick = queue.best(allow_new)
            if pick is None:
                if allow_new or policy.new_contacts_per_day == 0:
                    return None
                if not queue.has_due_new_contacts():
                    return None
                first = self.earliest_send(day.end)
                reason = WaitReason.NEW_CONTACT_CAP
                detour = True
                pick = queue.best(True)
                if pick is None:
                    return None
            message, known = pick
            typing = (
                typing_seconds(policy, message.text_length, counters.slot.typing_factor())
                if policy.typing
                else 0.0
            )
        start = now + typing
        send_at = first
        if start > first:
            send_at, why = self.earliest_send_why(start)
            reason = why or WaitReason.DUE
        release_at = send_at - typing
        if release_at <= now:
            reason = WaitReason.DUE
        return Plan(message, known, release_at, send_at, reason, day, typing, detour, bound)

    def bound(self) -> Bound:
        """No send before the gap's end and the minute and hour windows' free times: the
        latest of them and its rule (the first of equal ones), or (-inf, DUE)."""
        policy, counters = self.policy, self.counters
        base, reason = -math.inf, WaitReason.DUE
        if counters.last_attempt_at is not None:  # (no gap before the first attempt)
            base, reason = counters.last_attempt_at + counters.slot.gap(policy), WaitReason.GAP
        bound = counters.minute.free_at(policy.per_minute)
        if bound > base:
            base, reason = bound, WaitReason.MINUTE_CAP
        bound = counters.hour.free_at(policy.per_hour)
        if bound > base:
            base, reason = bound, WaitReason.HOUR_CAP
        return base, reason

    def _first_send(self, now: float, bound: Bound) -> tuple[float, WaitReason]:
        """The earliest send time of any message, and the rule behind it; also sets
        `soonest_release`, `first_send` and `first_reason`."""
        base, reason = bound if bound[0] > now else (now, WaitReason.DUE)
        first, moved = self.earliest_send_why(base)
        if moved is not None:
            reason = moved
        self._note_first_send(first, reason)
        return first, reason

    def _note_first_send(self, first: float, reason: WaitReason) -> None:
        policy = self.policy
        self.soonest_release = first - policy.typing_max_seconds if policy.typing else first
        self.first_send, self.first_reason = first, reason

    def waiting(self, now: float, message_id: str | None) -> Waiting | None:
        """Why `message_id` (None: the message the instance releases next) waits, and the
        earliest time it may be released; None when it is not queued. Plans at `now`."""
        plan = self.plan(now)
        if message_id is None:
            # Nothing planned: due new contacts the cap keeps out (a cap of 0), or else
            # the scheduled message that comes due first.
            best = self.queue.best(True)
            ahead = (
                plan.message
                if plan is not None
                else best[0]
                if best is not None
                else self.queue.next_scheduled()
            )
            if ahead is None:
                return None
            message_id = ahead.message_id
        message = self.queue.get(message_id)
        if message is None:
            return None
        first, first_reason = self.first_send, self.first_reason
        assert first is not None  # set by plan()
        if plan is not None and plan.message.message_id == message_id:
            at, reason = max(now, plan.release_at), plan.reason
            if reason is WaitReason.DUE and self.in_flight is not None:
                reason = WaitReason.IN_FLIGHT
        elif not self.queue.is_due(message_id):
            typing = typing_seconds(
                self.policy, message.text_length, self.counters.slot.typing_factor()
            )
            at, reason = message.not_before, WaitReason.SEND_AT
            if first - typing > at:
                at, reason = first - typing, first_reason
        else:
            # Messages ahead of it may still be cancelled or expire, so it may go first: at
            # `first` less its typing (a longer typing is drawn only after an attempt ends,
            # and nothing is released before that end, which is after `first`).
            typing = typing_seconds(
                self.policy, message.text_length, self.counters.slot.typing_factor()
            )
            at, reason = max(now, first - typing), WaitReason.QUEUE
            day = self.local_day(first)
            if not self.queue.heads_lane(message_id):
                reason = WaitReason.CHAT_ORDER
            elif (
                not self.queue.is_known(message_id)
                and self.counters.new_on(day.day) >= self.policy.new_contacts_per_day
            ):
                # New contacts are eligible again on the next local day.
                reason = WaitReason.NEW_CONTACT_CAP
                longest = typing_seconds(self.policy, message.text_length, 1 + TYPING_SPREAD)
                at = max(at, self.earliest_send(day.end) - longest)
        if self.paused is not None:
            reason = WaitReason.PAUSED
        elif not self.ready:
            reason = WaitReason.NOT_CONNECTED
        return Waiting(message_id, reason, at)

    def wake(self, now: float) -> tuple[float | None, float | None]:
        """(When this instance next needs attention, the planned release behind it)."""
        wake = self.queue.next_expiry()
        planned = None
        self.cached_plan = None
        if self.can_release():
            plan = self.cached_plan = self.plan(now)  # first: it brings due messages in
            promotion = self.queue.next_promotion()
            if promotion is not None:
                if self.soonest_release is not None:
                    promotion = max(promotion, self.soonest_release)
                wake = promotion if wake is None else min(wake, promotion)
            if plan is not None:
                expires = plan.message.expires_at
                if expires is None or plan.send_at < expires:
                    planned = plan.release_at
                    wake = planned if wake is None else min(wake, planned)
                # else: it cannot be sent in time; its expiry (already in `wake`) comes first
        return wake, planned

    def record_send(self, flight: InFlight, t: float) -> None:
        recipient = flight.message.recipient
        day = self.local_day(t).day
        self.counters.roll(day)
        new = not flight.known and not self.counters.is_new_today(recipient)
        self.counters.record_send(t, day, recipient, new)
        self.queue.mark_known(recipient)
        open_day = self._open_day
        if open_day is not None and self.counters.sent_on(open_day.day) >= open_day.cap:
            self._close_open_stretch()

    def export(self) -> dict[str, Any]:
        flight = self.in_flight
        return {
            "format": STATE_FORMAT,
            **self.counters.export(),
            **self.health.export(),
            "paused": self.paused,
            "in_flight": None
            if flight is None
            else {
                "message_id": flight.message.message_id,
                "recipient": flight.message.recipient,
                "known": flight.known,
                "send_at": flight.send_at,
            },
        }

    def restore(self, state: dict[str, Any], rng: random.Random) -> None:
        if state.get("format") != STATE_FORMAT:
            raise StateError(f"unknown scheduler state format {state.get('format')!r}")
        paused = state.get("paused")
        if paused is not None and not isinstance(paused, str):
            raise StateError("paused must be a reason or null")
        flight = _parse_flight(state.get("in_flight"))
        self.counters.restore(state)
        self._close_open_stretch()
        self.health.restore(state)
        self.paused = paused
        self.in_flight = None
        if flight is not None:
            # Released and never reported: the process stopped around the send. Nothing is
            # sent twice (the outbox marks it DELIVERY_UNKNOWN), and it is counted as sent at
            # its planned time, because it may well have gone out.
            message_id, recipient, known, send_at = flight
            placeholder = Outgoing(message_id, self.name, recipient, 0, 0, -1, send_at, None)
            self.record_send(InFlight(placeholder, known, send_at), send_at)
            self.counters.attempt_ended(send_at, rng)
        for recipient in self.counters.new_today:  # messaged today: no longer new
            self.queue.mark_known(recipient)


def _parse_flight(value: object) -> tuple[str, str, bool, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StateError("in_flight must be an object or null")
    message_id, recipient = value.get("message_id"), value.get("recipient")
    known, send_at = value.get("known"), value.get("send_at")
    if not (isinstance(message_id, str) and isinstance(recipient, str)):
        raise StateError("in_flight needs message_id and recipient")
    if not isinstance(known, bool):
        raise StateError("in_flight.known must be a boolean")
    if not isinstance(send_at, int | float) or isinstance(send_at, bool):
        raise StateError("in_flight.send_at must be epoch seconds")
    if not math.isfinite(send_at):
        raise StateError("in_flight.send_at must be finite")
    return message_id, recipient, known, float(send_at)
