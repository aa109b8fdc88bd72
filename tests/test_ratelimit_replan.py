"""The re-plan a late driver gets (`Instance.replan`, which keeps the queue's choice when only
time moved) against planning from scratch, in virtual time: random policies and time zones,
random sequences of enqueues, sends, failures, pauses, disconnects, cancels and late
wake-ups (from a microsecond to a day late, across quiet hours, local days and DST changes).

Two checks: every incremental re-plan equals `Instance.plan` at the same moment, and a whole
run with re-plans makes exactly the decisions of the same run planning from scratch."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_ratelimit_properties import DAY, ZONE_STARTS, policies
from tests.test_ratelimit_sim import FakeClock, message
from zapgate.ratelimit.decisions import AutoPause, Decision, Expiry, Release
from zapgate.ratelimit.health import PauseRules
from zapgate.ratelimit.instance import Instance, Plan
from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy
from zapgate.ratelimit.scheduler import Scheduler

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# How late the driver wakes up: on time, rounding, a loaded loop, and jumps across the
# gap, quiet hours and local days.
LATENESS = st.sampled_from([0.0, 1e-7, 7e-4, 0.05, 2.0, 45.0, 3600.0, 5 * 3600.0, DAY]) | st.floats(
    0, 120
)

Op = tuple[Any, ...]


@dataclass(frozen=True)
class Run:
    start: float
    policies: dict[str, tuple[SendPolicy, float]]
    ops: list[Op]
    seed: int


@st.composite
def runs(draw: st.DrawFn) -> Run:
    zone, start = draw(st.sampled_from(ZONE_STARTS))
    start += draw(st.floats(0, 2 * DAY))
    names = [f"i{n}" for n in range(draw(st.integers(1, 3)))]
    # Small new-contact caps often: the day a re-plan lands on then decides the message.
    caps = st.sampled_from([1, 2]) | st.integers(0, 25)
    chosen = {
        name: (
            replace(draw(policies(zone)), new_contacts_per_day=draw(caps)),
            start - draw(st.integers(0, 9)) * DAY,
        )
        for name in names
    }
    instance = st.sampled_from(names)
    enqueue = st.tuples(
        st.just("enqueue"),
        instance,
        st.sampled_from([f"c{n}" for n in range(6)]),
        st.integers(0, 2),  # priority
        st.sampled_from([0.0, 0.0, 0.0, 30.0, 600.0, 5 * 3600.0, DAY]),  # not_before delay
        st.none() | st.none() | st.floats(1, 2 * DAY),  # lifetime
        st.integers(0, 400),  # text length
        st.booleans(),  # known contact
    )
    op = st.one_of(
        enqueue,
        enqueue,
        st.tuples(st.just("wake"), LATENESS),
        st.tuples(st.just("wake"), LATENESS),
        st.tuples(st.just("wake"), LATENESS),
        st.tuples(st.sampled_from(["sent", "sent", "failed", "not_sent"]), instance),
        st.tuples(st.just("sent"), instance),
        st.tuples(st.sampled_from(["pause", "resume", "ready", "unready"]), instance),
        st.tuples(st.just("cancel"), instance, st.integers(0, 200)),
        st.tuples(st.just("look"), instance),
    )
    ops = draw(st.lists(op, min_size=30, max_size=100))
    return Run(start, chosen, ops, draw(st.integers(0, 2**32)))


def _log(decision: Decision) -> tuple[Any, ...]:
    if isinstance(decision, Release):
        message = decision.message
        return ("release", message.message_id, decision.typing_seconds, decision.scheduled_at)
    if isinstance(decision, Expiry):
        return ("expiry", decision.message.message_id)
    assert isinstance(decision, AutoPause)
    return ("pause", decision.instance, decision.reason)


def play(run: Run) -> list[Any]:
    """Everything the scheduler decided and reported along the run."""
    clock = FakeClock(run.start)
    scheduler = Scheduler(clock, random.Random(run.seed))
    for name, (policy, warmup) in run.policies.items():
        scheduler.configure(name, policy, warmup)
        scheduler.set_ready(name, True)
    in_flight: dict[str, str] = {}
    queued: dict[str, list[str]] = {name: [] for name in run.policies}
    log: list[Any] = []
    for seq, op in enumerate(run.ops):
        kind, *args = op
        if kind == "enqueue":
            name, recipient, priority, delay, lifetime, length, known = args
            m = message(
                seq,
                name,
                recipient,
                priority=priority,
                not_before=clock.t + delay,
                expires_at=None if lifetime is None else clock.t + lifetime,
                text_length=length,
                known=known,
            )
            scheduler.enqueue(m)
            queued[name].append(m.message_id)
        elif kind == "wake":
            wake = scheduler.next_wakeup()
            if wake is not None:
                clock.t = max(clock.t, wake + args[0])
            for decision in scheduler.due():
                log.append((clock.t, *_log(decision)))
                if isinstance(decision, Release):
                    in_flight[decision.message.instance] = decision.message.message_id
        elif kind in ("sent", "failed", "not_sent"):
            name = args[0]
            flying = in_flight.pop(name, None)
            if flying is not None:
                if kind == "sent":
                    scheduler.on_sent(name, flying)
                elif kind == "failed":
                    log.append(("failed", scheduler.on_failed(name, flying, "boom")))
                else:
                    scheduler.on_not_sent(name, flying)
        elif kind in ("pause", "resume"):
            if kind == "pause":
                scheduler.pause(args[0], "operator")
            else:
                scheduler.resume(args[0])
        elif kind in ("ready", "unready"):
            scheduler.set_ready(args[0], kind == "ready")
        elif kind == "cancel":
            ids = queued[args[0]]
            if ids:
                log.append(("cancel", scheduler.cancel(args[0], ids[args[1] % len(ids)])))
        else:
            log.append(("waiting", scheduler.waiting(args[0])))
        log.append(("next", scheduler.next_wakeup()))
    for name in run.policies:
        log.append(("state", name, scheduler.export_state(name)))
    return log


@contextmanager
def planning_from_scratch() -> Iterator[None]:
    """Every re-plan of a late driver made by `Instance.plan` instead."""

    def from_scratch(self: Instance, previous: Plan, now: float) -> Plan | None:
        return self.plan(now)

    with mock.patch.object(Instance, "replan", from_scratch):
        yield


@contextmanager
def checked_replans(seen: list[Plan | None]) -> Iterator[None]:
    """Every re-plan compared, on the spot, with a plan made from scratch at the same time."""
    incremental = Instance.replan

    def checked(self: Instance, previous: Plan, now: float) -> Plan | None:
        assert not self.queue.promote(now), "re-planned while a message came due"
        plan = incremental(self, previous, now)
        fresh = self.plan(now)
        assert (plan and plan.outcome()) == (fresh and fresh.outcome())
        seen.append(plan)
        return plan

    with mock.patch.object(Instance, "replan", checked):
        yield


@PROPERTY
@given(runs())
def test_a_late_drivers_replan_equals_a_plan_from_scratch(run: Run) -> None:
    with checked_replans([]):
        play(run)


@PROPERTY
@given(runs())
def test_a_run_with_replans_decides_what_planning_from_scratch_decides(run: Run) -> None:
    incremental = play(run)
    with planning_from_scratch():
        reference = play(run)
    assert incremental == reference


def test_a_late_driver_goes_through_the_replan() -> None:
    """The path the properties check is the one a late driver takes (so they check it)."""
    policy = replace(DEFAULT_POLICY, quiet_start_hour=None, quiet_end_hour=None, warmup_days=1)
    name = "i0"
    run = Run(
        start=1_700_000_000.0,
        policies={name: (policy, 1_700_000_000.0 - 30 * DAY)},
        ops=[("enqueue", name, f"c{n}", 0, 0.0, None, 20, True) for n in range(3)]
        + [("wake", 0.0), ("sent", name), ("wake", 0.25), ("sent", name), ("wake", 90.0)],
        seed=7,
    )
    seen: list[Plan | None] = []
    with checked_replans(seen):
        log = play(run)
    assert len(seen) == 2
    assert sum(1 for entry in log if entry[1] == "release") == 3


def test_a_replan_on_a_later_day_chooses_again_under_that_days_new_contact_cap() -> None:
    """Yesterday's new-contact cap kept a new contact out; a driver late into the next local
    day must see it eligible again (and ranked first by its priority)."""
    start = datetime(2024, 6, 1, 23, 58, tzinfo=UTC).timestamp()
    policy = replace(
        DEFAULT_POLICY,
        quiet_start_hour=None,
        quiet_end_hour=None,
        warmup_days=1,
        new_contacts_per_day=1,
        typing=False,
    )
    name = "i0"
    run = Run(
        start=start,
        policies={name: (policy, start - 30 * DAY)},
        ops=[
            ("enqueue", name, "first-new", 0, 0.0, None, 20, False),
            ("wake", 0.0),
            ("sent", name),  # the day's one new contact
            ("enqueue", name, "new", 2, 0.0, None, 20, False),
            ("enqueue", name, "known", 0, 0.0, None, 20, True),
            ("wake", DAY),  # planned: "known" at the end of the gap; woken a day later
        ],
        seed=3,
    )
    seen: list[Plan | None] = []
    with checked_replans(seen):
        log = play(run)
    releases = [entry[2] for entry in log if entry[1] == "release"]
    assert releases == ["i0-0", "i0-3"]  # the new contact's urgent message, not "known"
    assert len(seen) == 1


def test_a_late_driver_does_not_send_past_the_day_cap_the_last_send_reached() -> None:
    """The re-plan skips the calendar while the driver is late inside a day with room left;
    the send that uses up the day's cap must end that shortcut, so the next message waits
    for the next local day (re-plans checked against plans from scratch on the way)."""
    policy = replace(
        DEFAULT_POLICY,
        quiet_start_hour=None,
        quiet_end_hour=None,
        warmup_days=1,
        per_day=2,
        warmup_first_day_cap=1,
        typing=True,
        typing_max_seconds=3.0,
    )
    start = datetime(2024, 6, 1, 15, 0, tzinfo=UTC).timestamp()
    name = "i0"
    run = Run(
        start=start,
        policies={name: (policy, start - 30 * DAY)},
        ops=[("enqueue", name, f"c{n}", 0, 0.0, None, 40, True) for n in range(3)]
        + [("wake", 0.0), ("sent", name), ("wake", 0.3), ("sent", name), ("wake", 7.0)],
        seed=11,
    )
    seen: list[Plan | None] = []
    with checked_replans(seen):
        log = play(run)
    released_at = [entry[0] for entry in log if entry[1] == "release"]
    assert len(released_at) == 3
    assert len(seen) >= 1
    calendar = Instance(name, policy, start, PauseRules(), random.Random(0)).calendar
    assert calendar.day(released_at[1]) == calendar.day(start)
    assert released_at[2] >= calendar.next_day_start(start) - policy.typing_max_seconds


def _one_sent_on_an_open_day(policy: SendPolicy) -> tuple[Scheduler, float]:
    """An instance whose late driver released and sent one of two messages at 15:00 UTC,
    so the rest of that day is known to have room (its open stretch is cached)."""
    start = datetime(2024, 6, 1, 15, 0, tzinfo=UTC).timestamp()
    clock = FakeClock(start)
    scheduler = Scheduler(clock, random.Random(5))
    scheduler.configure("i0", policy, start - 30 * DAY)
    scheduler.set_ready("i0", True)
    for n in range(2):
        scheduler.enqueue(message(n, "i0", f"c{n}", not_before=start, known=True))
    wake = scheduler.next_wakeup()
    assert wake is not None
    clock.t = wake + 0.3
    [release] = scheduler.due()
    assert isinstance(release, Release)
    scheduler.on_sent("i0", release.message.message_id)
    return scheduler, start


OPEN_DAY_POLICY = replace(
    DEFAULT_POLICY,
    quiet_start_hour=None,
    quiet_end_hour=None,
    warmup_days=1,
    per_day=5,
    warmup_first_day_cap=1,
    typing=False,
    timezone="UTC",
)


def test_a_restored_state_with_the_day_cap_used_up_ends_the_open_day() -> None:
    scheduler, start = _one_sent_on_an_open_day(OPEN_DAY_POLICY)
    state = scheduler.export_state("i0")
    state["sent_today"] = OPEN_DAY_POLICY.per_day
    scheduler.import_state("i0", state)
    wake = scheduler.next_wakeup()
    assert wake is not None
    assert wake >= start + 9 * 3600  # 00:00 UTC the next day, not the end of the gap


def test_a_policy_with_a_lower_day_cap_ends_the_open_day() -> None:
    scheduler, start = _one_sent_on_an_open_day(OPEN_DAY_POLICY)
    lower = replace(OPEN_DAY_POLICY, per_day=1)
    scheduler.configure("i0", lower, start - 30 * DAY)
    wake = scheduler.next_wakeup()
    assert wake is not None
    assert wake >= start + 9 * 3600
