"""A virtual-time driver for the send scheduler, and checks that judge its send log with their
own arithmetic (zoneinfo, plain loops), not with the scheduler's code.

The driver does what the real one does, at exact virtual times: it sleeps to the earliest of
`next_wakeup()`, its own pending sends and the test's scripted events, enqueues what arrives,
carries out each Release (typing, then `on_sent` or `on_failed`), and persists the exported
state of dirty instances after every step, so a test can "crash" it at any step.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from zapgate.ratelimit.decisions import AutoPause, Expiry, Release
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy
from zapgate.ratelimit.scheduler import Scheduler

# Send times are epoch seconds (~1.7e9, resolution ~2.4e-7): sums like `t + 60` round, so the
# checks allow a microsecond.
EPS = 1e-6
START = datetime(2024, 5, 6, 9, 0, tzinfo=ZoneInfo("UTC")).timestamp()

OPEN_POLICY = replace(
    DEFAULT_POLICY,
    min_gap_seconds=10.0,
    jitter_min_seconds=0.0,
    jitter_max_seconds=5.0,
    per_minute=100,
    per_hour=10_000,
    per_day=100_000,
    new_contacts_per_day=100_000,
    warmup_days=1,
    warmup_first_day_cap=1,
    quiet_start_hour=None,
    quiet_end_hour=None,
    typing=False,
)


class FakeClock:
    def __init__(self, t: float = START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True)
class Attempt:
    """One release carried out: sent (error None) or failed."""

    message: Outgoing
    released_at: float
    scheduled_at: float
    typing_seconds: float
    at: float  # when it was sent (or failed)
    error: str | None = None


def message(
    seq: int,
    instance: str = "a",
    recipient: str | None = None,
    *,
    priority: int = 0,
    not_before: float = START,
    expires_at: float | None = None,
    text_length: int = 20,
    known: bool = False,
) -> Outgoing:
    return Outgoing(
        message_id=f"{instance}-{seq}",
        instance=instance,
        recipient=recipient or f"r{seq}",
        text_length=text_length,
        priority=priority,
        seq=seq,
        not_before=not_before,
        expires_at=expires_at,
        known_contact=known,
    )


@dataclass
class Driver:
    scheduler: Scheduler
    clock: FakeClock
    # Decides the outcome of a send: None = sent, else the error text.
    outcome: Callable[[Outgoing], str | None] = lambda _m: None
    # Seconds from a send to its delivery receipt (None: never delivered).
    receipt_delay: Callable[[Outgoing], float | None] = lambda _m: 1.0
    # When set, the driver computes `known_contact` like the outbox does (sent to before).
    outbox_knows_contacts: bool = True
    check_order: bool = True
    attempts: list[Attempt] = field(default_factory=list)
    expired: list[tuple[float, Outgoing]] = field(default_factory=list)
    auto_pauses: list[tuple[float, AutoPause]] = field(default_factory=list)
    failure_pauses: list[tuple[float, str]] = field(default_factory=list)
    receipt_pauses: list[tuple[float, str]] = field(default_factory=list)
    saved: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: dict[str, Outgoing] = field(default_factory=dict)  # the outbox's QUEUED messages
    in_flight: dict[str, tuple[Release, float]] = field(default_factory=dict)  # by instance
    sent_to: set[tuple[str, str]] = field(default_factory=set)  # (instance, recipient)
    # Instance -> policy, for the order check to know when new contacts were not eligible.
    policies: dict[str, SendPolicy] = field(default_factory=dict)
    first_sent: dict[tuple[str, str], float] = field(default_factory=dict)
    _events: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _order: Iterator[int] = field(default_factory=itertools.count)

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._order), action))

    def arrive(self, m: Outgoing, at: float | None = None) -> None:
        self.at(self.clock.t if at is None else at, lambda: self.enqueue(m))

    def enqueue(self, m: Outgoing) -> None:
        if self.outbox_knows_contacts:
            m = replace(
                m, known_contact=m.known_contact or (m.instance, m.recipient) in self.sent_to
            )
        self.queued[m.message_id] = m
        self.scheduler.enqueue(m)

    def cancel(self, instance: str, message_id: str) -> bool:
        cancelled = self.scheduler.cancel(instance, message_id)
        if cancelled:
            del self.queued[message_id]
        return cancelled

    def run(
        self, until: float, max_steps: int = 200_000, stop: Callable[[], bool] | None = None
    ) -> None:
        """Drive until `until` (or until `stop()` holds after a step)."""
        for _ in range(max_steps):
            if stop is not None and stop():
                return
            wake = self.scheduler.next_wakeup()
            times = [
                t for t in (wake, self._events[0][0] if self._events else None) if t is not None
            ]
            if not times or min(times) > until:
                self.clock.t = max(self.clock.t, until)
                return
            self.clock.t = max(self.clock.t, min(times))
            self.step()
        raise AssertionError("the driver did not settle")

    def step(self) -> None:
        now = self.clock.t
        while self._events and self._events[0][0] <= now:
            heapq.heappop(self._events)[2]()
        for decision in self.scheduler.due():
            if isinstance(decision, Release):
                self._release(decision, now)
            elif isinstance(decision, Expiry):
                assert decision.message.message_id in self.queued, "expired twice or unknown"
                del self.queued[decision.message.message_id]
                self.expired.append((now, decision.message))
            else:
                assert isinstance(decision, AutoPause)
                self.auto_pauses.append((now, decision))
        self.persist()

    def persist(self) -> None:
        for instance in self.scheduler.dirty():
            self.saved[instance] = self.scheduler.export_state(instance)
            self.scheduler.mark_saved(instance)

    def _release(self, release: Release, now: float) -> None:
        m = release.message
        assert m.instance not in self.in_flight, "two messages in flight on one instance"
        assert m.message_id in self.queued, "released a message that is not queued"
        assert abs(release.scheduled_at - now) <= EPS, "a release was late in virtual time"
        assert release.typing_seconds >= 0
        if self.check_order:
            blocked = self._new_contacts_blocked(m, now, now + release.typing_seconds)
            known = {r for i, r in self.sent_to if i == m.instance}
            known |= {
                q.recipient
                for q in self.queued.values()
                if q.instance == m.instance and q.known_contact
            }
            if blocked is None:  # it depends on the day the send was planned on
                check_recipient_order(m, now, self.queued.values())
            else:
                check_release_order(m, now, self.queued.values(), known if blocked else None)
        del self.queued[m.message_id]
        self.in_flight[m.instance] = (release, now)
        self.at(now + release.typing_seconds, lambda: self._complete(m.instance))

    def _complete(self, instance: str) -> None:
        if instance not in self.in_flight:
            return  # the driver "crashed" and was replaced meanwhile
        release, released_at = self.in_flight.pop(instance)
        m, now = release.message, self.clock.t
        error = self.outcome(m)
        self.attempts.append(
            Attempt(m, released_at, release.scheduled_at, release.typing_seconds, now, error)
        )
        if error is None:
            self.sent_to.add((instance, m.recipient))
            self.first_sent.setdefault((instance, m.recipient), now)
            delay = self.receipt_delay(m)
            if delay is not None:
                self.at(now + delay, lambda: self._receipt(m))
            self.scheduler.on_sent(instance, m.message_id)
        else:
            reason = self.scheduler.on_failed(instance, m.message_id, error)
            if reason is not None:
                self.failure_pauses.append((now, reason))
        self.persist()

    def _receipt(self, m: Outgoing) -> None:
        if m.instance not in self.scheduler.instances():
            return
        reason = self.scheduler.on_receipt(m.instance, m.message_id)
        if reason is not None:
            self.receipt_pauses.append((self.clock.t, reason))

    def _new_contacts_blocked(self, m: Outgoing, now: float, send_at: float) -> bool | None:
        """Whether the day's new-contact cap was used up when `m` was released; None when
        that depends on the day the scheduler planned on (the send falls on a later day)."""
        policy = self.policies.get(m.instance)
        if policy is None:
            return False
        if policy.new_contacts_per_day == 0:
            return True
        today = local_date(now, policy.timezone)
        new_today = sum(
            1
            for (instance, _), t in self.first_sent.items()
            if instance == m.instance and local_date(t, policy.timezone) == today
        )
        if new_today < policy.new_contacts_per_day:
            return False
        return True if local_date(send_at, policy.timezone) == today else None

    def known(self, m: Outgoing) -> bool:
        return m.known_contact or (m.instance, m.recipient) in self.sent_to

    def sent(self, instance: str | None = None) -> list[Attempt]:
        return [
            a
            for a in self.attempts
            if a.error is None and (instance is None or a.message.instance == instance)
        ]


def check_recipient_order(m: Outgoing, now: float, queued: Iterable[Outgoing]) -> None:
    """No earlier message to the same recipient is due and still waiting."""
    for q in queued:
        if q.instance == m.instance and q.recipient == m.recipient and q.not_before <= now:
            assert q.seq >= m.seq, "a recipient's messages were reordered"


def check_release_order(
    m: Outgoing, now: float, queued: Iterable[Outgoing], only: set[str] | None = None
) -> None:
    """The released message heads its recipient's due messages, and its recipient's queue
    ranks first: highest priority among its due messages, then the oldest head. With
    `only` (the day's new-contact cap is used up), only those recipients compete."""
    lanes: dict[str, list[Outgoing]] = defaultdict(list)
    queued = list(queued)
    for q in queued:
        eligible = only is None or q.recipient in only
        if q.instance == m.instance and q.not_before <= now and eligible:
            lanes[q.recipient].append(q)
    check_recipient_order(m, now, queued)
    mine = lanes[m.recipient]
    assert mine, "released a new contact while the new-contact cap was used up"

    def rank(lane: list[Outgoing]) -> tuple[int, int]:
        return (-max(q.priority for q in lane), min(q.seq for q in lane))

    best = min(rank(lane) for lane in lanes.values())
    assert rank(mine) == best, f"released {m.message_id} ahead of a higher-ranked recipient"


# -- independent checks over a send log ---------------------------------------------------------


def expected_day_cap(policy: SendPolicy, day_number: int) -> int:
    """The documented warm-up curve: geometric from the first-day cap to per_day."""
    n, first, full = policy.warmup_days, policy.warmup_first_day_cap, policy.per_day
    if n <= 1 or day_number >= n:
        return full
    if day_number <= 1:
        return first
    value = first * (full / first) ** ((day_number - 1) / (n - 1))
    return min(full, max(first, round(value)))


def local_date(t: float, zone: str) -> date:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).date()


def in_quiet_hours(t: float, policy: SendPolicy) -> bool:
    start, end = policy.quiet_start_hour, policy.quiet_end_hour
    if start is None or end is None:
        return False
    hour = datetime.fromtimestamp(t, ZoneInfo(policy.timezone)).hour
    return start <= hour < end if start < end else (hour >= start or hour < end)


def max_in_window(times: list[float], length: float) -> int:
    """The most sends in any window (t - length, t]."""
    times, most, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - length + EPS:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def check_send_log(
    policy: SendPolicy,
    warmup_started_at: float,
    sent: list[tuple[float, str]],
    attempt_times: list[float],
    known_before: set[str] | None = None,
) -> None:
    """Every rule of the policy over one instance's log of (send time, recipient) and the
    times of all its attempts (sent and failed)."""
    times = [t for t, _ in sent]
    assert max_in_window(times, 60) <= policy.per_minute, "per-minute cap exceeded"
    assert max_in_window(times, 3600) <= policy.per_hour, "per-hour cap exceeded"
    per_day: dict[date, int] = defaultdict(int)
    new_per_day: dict[date, int] = defaultdict(int)
    seen = set(known_before or ())
    for t, recipient in sorted(sent):
        day = local_date(t, policy.timezone)
        per_day[day] += 1
        if recipient not in seen:
            new_per_day[day] += 1
            seen.add(recipient)
        assert not in_quiet_hours(t, policy), f"sent in quiet hours at {t}"
    day0 = local_date(warmup_started_at, policy.timezone)
    for day, count in per_day.items():
        cap = expected_day_cap(policy, (day - day0).days + 1)
        assert count <= cap, f"{count} sent on {day}, cap {cap}"
    for day, count in new_per_day.items():
        assert count <= policy.new_contacts_per_day, f"{count} new contacts on {day}"
    floor = policy.min_gap_seconds + policy.jitter_min_seconds
    ordered = sorted(attempt_times)
    for before, after in itertools.pairwise(ordered):
        assert after - before >= floor - EPS, f"gap {after - before} below {floor}"


def check_driver_log(
    driver: Driver,
    policies: dict[str, tuple[SendPolicy, float]],
    known_before: dict[str, set[str]] | None = None,
) -> None:
    """The policy rules per instance, plus expiry and send-at times of every message.
    `known_before`: recipients each instance knew before the log began."""
    for instance, (policy, warmup) in policies.items():
        attempts = [a for a in driver.attempts if a.message.instance == instance]
        sent = [(a.at, a.message.recipient) for a in attempts if a.error is None]
        known = (known_before or {}).get(instance, set())
        check_send_log(policy, warmup, sent, [a.at for a in attempts], known)
        for a in attempts:
            expires = a.message.expires_at
            assert expires is None or a.at < expires, "sent at or after its expiry"
            assert a.at >= a.message.not_before, "sent before its send-at time"
    for t, m in driver.expired:
        assert m.expires_at is not None
        assert t >= m.expires_at - EPS, "expired early"


def spread(values: list[float]) -> float:
    return max(values) - min(values) if values else math.nan


def test_the_driver_sends_a_queue_at_the_policy_gap() -> None:
    clock = FakeClock()
    scheduler = Scheduler(clock, random.Random(3))
    scheduler.configure("a", OPEN_POLICY, START)
    scheduler.set_ready("a", True)
    driver = Driver(scheduler, clock)
    for seq in range(10):
        driver.arrive(message(seq))
    driver.run(START + 3600)
    times = [a.at for a in driver.sent("a")]
    assert len(times) == 10
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(10 - EPS <= g <= 15 + EPS for g in gaps)
    check_driver_log(driver, {"a": (OPEN_POLICY, START)})
