"""Property tests of the send scheduler in virtual time: random policies, loads, failures,
pauses, disconnects and restarts, judged by independent checks over the send log."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_ratelimit_sim import (
    EPS,
    OPEN_POLICY,
    Attempt,
    Driver,
    FakeClock,
    check_driver_log,
    message,
)
from zapgate.ratelimit.decisions import Release
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.policy import SendPolicy
from zapgate.ratelimit.scheduler import Scheduler

DAY = 86_400.0
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _at(zone: str, year: int, month: int, day: int, hour: int) -> float:
    return datetime(year, month, day, hour, tzinfo=ZoneInfo(zone)).timestamp()


# (zone, a moment a little before one of its DST changes, or an ordinary one)
ZONE_STARTS = [
    ("America/Sao_Paulo", _at("America/Sao_Paulo", 2018, 11, 2, 20)),  # midnight gap Nov 4
    ("America/Sao_Paulo", _at("America/Sao_Paulo", 2018, 2, 16, 20)),  # fold Feb 17 23:00
    ("Europe/Berlin", _at("Europe/Berlin", 2024, 3, 29, 20)),  # gap 02:00 -> 03:00
    ("Europe/Berlin", _at("Europe/Berlin", 2024, 10, 25, 20)),  # fold 03:00 -> 02:00
    ("America/Havana", _at("America/Havana", 2024, 3, 8, 20)),  # midnight gap Mar 10
    ("America/Havana", _at("America/Havana", 2024, 11, 1, 20)),  # fold 01:00 -> 00:00
    ("Australia/Lord_Howe", _at("Australia/Lord_Howe", 2024, 4, 5, 20)),  # 30-minute fold
    ("Australia/Lord_Howe", _at("Australia/Lord_Howe", 2024, 10, 4, 20)),  # 30-minute gap
    ("Asia/Kolkata", _at("Asia/Kolkata", 2024, 6, 1, 20)),
    ("UTC", _at("UTC", 2024, 6, 1, 20)),
]


@st.composite
def policies(draw: st.DrawFn, zone: str) -> SendPolicy:
    per_day = draw(st.integers(1, 20) | st.integers(1, 300))
    jitter_min = draw(st.floats(0, 20))
    quiet = draw(
        st.none() | st.tuples(st.integers(0, 23), st.integers(0, 23)).filter(lambda q: q[0] != q[1])
    )
    return SendPolicy(
        min_gap_seconds=draw(st.floats(0, 90)),
        jitter_min_seconds=jitter_min,
        jitter_max_seconds=jitter_min + draw(st.floats(0, 60)),
        per_minute=draw(st.integers(1, 8)),
        per_hour=draw(st.integers(1, 10) | st.integers(1, 150)),
        per_day=per_day,
        new_contacts_per_day=draw(st.integers(0, 25)),
        timezone=zone,
        warmup_days=draw(st.integers(1, 8)),
        warmup_first_day_cap=draw(st.integers(1, min(per_day, 4)) | st.integers(1, per_day)),
        quiet_start_hour=None if quiet is None else quiet[0],
        quiet_end_hour=None if quiet is None else quiet[1],
        typing=draw(st.booleans()),
        typing_chars_per_second=draw(st.floats(0.5, 40)),
        typing_max_seconds=draw(st.floats(0, 120)),
    )


@dataclass(frozen=True)
class Scenario:
    start: float
    policies: dict[str, tuple[SendPolicy, float]]  # instance -> (policy, warm-up start)
    arrivals: list[tuple[float, Outgoing]]  # in enqueue order (seq increases)
    fail_rate: float
    toggles: list[tuple[float, str, str]]  # (at, instance, action: see Operator)
    seed: int


@st.composite
def scenarios(draw: st.DrawFn, toggles: bool = True, max_messages: int = 40) -> Scenario:
    zone, start = draw(st.sampled_from(ZONE_STARTS))
    start += draw(st.floats(0, 2 * DAY))
    names = [f"i{n}" for n in range(draw(st.integers(1, 3)))]
    chosen = {
        name: (draw(policies(zone)), start - draw(st.integers(0, 3) | st.integers(0, 10)) * DAY)
        for name in names
    }
    drafts = []
    for name in names:
        for _ in range(draw(st.integers(0, max_messages))):
            arrival = start + draw(st.floats(0, 2 * DAY))
            delay = draw(st.sampled_from([0.0, 0.0, 0.0, 600.0, 5 * 3600.0, DAY]))
            lifetime = draw(st.none() | st.floats(1, 3 * DAY))
            drafts.append(
                (
                    arrival,
                    name,
                    f"c{draw(st.integers(0, 7))}",
                    draw(st.integers(0, 2)),
                    arrival + delay,
                    None if lifetime is None else arrival + lifetime,
                    draw(st.integers(0, 400)),
                )
            )
    drafts.sort(key=lambda d: d[0])
    arrivals = [
        (
            arrival,
            message(
                seq,
                name,
                recipient,
                priority=priority,
                not_before=not_before,
                expires_at=expires,
                text_length=length,
            ),
        )
        for seq, (arrival, name, recipient, priority, not_before, expires, length) in enumerate(
            drafts
        )
    ]
    script: list[tuple[float, str, str]] = []
    if toggles:
        for _ in range(draw(st.integers(0, 12))):
            script.append(
                (
                    start + draw(st.floats(0, 3 * DAY)),
                    draw(st.sampled_from(names)),
                    draw(st.sampled_from(["ready", "unready", "pause", "resume", "stats"])),
                )
            )
    fail_rate = draw(st.sampled_from([0.0, 0.0, 0.1, 0.4]))
    return Scenario(start, chosen, arrivals, fail_rate, script, draw(st.integers(0, 2**32)))


class Operator:
    """Applies scripted readiness and pause changes, and asserts no release while an
    instance is not ready or paused."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.ready: dict[str, bool] = {}

    def apply(self, instance: str, action: str) -> None:
        scheduler = self.driver.scheduler
        if action in ("ready", "unready"):
            scheduler.set_ready(instance, action == "ready")
            self.ready[instance] = action == "ready"
        elif action == "pause":
            scheduler.pause(instance, "operator")
        elif action == "resume":
            scheduler.resume(instance)
        else:  # looking must not change anything
            stats = scheduler.stats(instance)
            assert stats.ready == self.ready[instance]
            assert stats.queued == sum(
                1 for m in self.driver.queued.values() if m.instance == instance
            )


def outcome_for(fail_rate: float, seed: int) -> Callable[[Outgoing], str | None]:
    def outcome(m: Outgoing) -> str | None:
        roll = random.Random(f"{seed}/{m.message_id}").random()
        if roll >= fail_rate:
            return None
        return "server returned error 463" if roll < fail_rate / 10 else "boom"

    return outcome


def build(scenario: Scenario, seed_offset: int = 0) -> tuple[Driver, Operator]:
    clock = FakeClock(scenario.start)
    scheduler = Scheduler(clock, random.Random(scenario.seed + seed_offset))
    driver = Driver(scheduler, clock, outcome=outcome_for(scenario.fail_rate, scenario.seed))
    operator = Operator(driver)
    driver.policies = {name: policy for name, (policy, _) in scenario.policies.items()}
    for name, (policy, warmup) in scenario.policies.items():
        scheduler.configure(name, policy, warmup)
        scheduler.set_ready(name, True)
        operator.ready[name] = True
    return driver, operator


def guard_releases(driver: Driver, operator: Operator) -> None:
    """Wrap the driver's release handling with the readiness and pause checks."""
    original = driver._release

    def checked(release: Release, now: float) -> None:
        instance = release.message.instance
        assert operator.ready[instance], "released while not ready"
        assert driver.scheduler.paused_reason(instance) is None, "released while paused"
        original(release, now)

    driver._release = checked  # type: ignore[method-assign]


@PROPERTY
@given(scenarios())
def test_no_rule_is_ever_broken(scenario: Scenario) -> None:
    driver, operator = build(scenario)
    guard_releases(driver, operator)
    for at, m in scenario.arrivals:
        driver.arrive(m, at)
    for at, instance, action in scenario.toggles:
        driver.at(at, functools.partial(operator.apply, instance, action))
    driver.run(scenario.start + 6 * DAY)
    check_driver_log(driver, scenario.policies)
    _check_accounting(driver, scenario)


def _check_accounting(driver: Driver, scenario: Scenario) -> None:
    """Every message ends exactly once: attempted, expired, or still queued / in flight."""
    attempted = [a.message.message_id for a in driver.attempts]
    expired = [m.message_id for _, m in driver.expired]
    flying = [r.message.message_id for r, _ in driver.in_flight.values()]
    ends = attempted + expired + flying + list(driver.queued)
    assert sorted(ends) == sorted(m.message_id for _, m in scenario.arrivals)


@PROPERTY
@given(scenarios(toggles=False), st.floats(0.05, 0.95), st.booleans())
def test_a_restart_keeps_every_counter(
    scenario: Scenario, crash_fraction: float, mid_send: bool
) -> None:
    """Crash at a random moment, start a new scheduler from the persisted states and the
    outbox, and the combined log still keeps every rule. A message in flight at the crash
    is never sent again (the rules count it as sent at its planned time)."""
    end = scenario.start + 6 * DAY
    crash_at = scenario.start + crash_fraction * 2 * DAY  # while messages still arrive
    before, _ = build(scenario)
    for at, m in scenario.arrivals:
        before.arrive(m, at)
    before.run(crash_at)
    if mid_send:  # crash while a message is with the engine
        crash_at = scenario.start + 2 * DAY
        before.run(crash_at, stop=lambda: bool(before.in_flight))
        crash_at = before.clock.t

    after, _ = build(scenario, seed_offset=1)
    after.clock.t = crash_at
    for name in scenario.policies:
        if name in before.saved:
            after.scheduler.import_state(name, before.saved[name])
    after.sent_to = set(before.sent_to)
    after.first_sent = dict(before.first_sent)
    unknown = []
    for release, released_at in before.in_flight.values():
        # DELIVERY_UNKNOWN: never sent again; the rules assume it went out as planned, and
        # the outbox counts its recipient as contacted.
        key = (release.message.instance, release.message.recipient)
        after.sent_to.add(key)
        after.first_sent.setdefault(key, released_at + release.typing_seconds)
        unknown.append(
            Attempt(
                release.message,
                released_at,
                release.scheduled_at,
                release.typing_seconds,
                released_at + release.typing_seconds,
            )
        )
    for m in sorted(before.queued.values(), key=lambda m: m.seq):
        after.enqueue(m)
    for at, m in scenario.arrivals:
        if at > crash_at:
            after.arrive(m, at)
    after.run(end)

    combined = Driver(after.scheduler, after.clock)
    combined.attempts = before.attempts + unknown + after.attempts
    combined.expired = before.expired + after.expired
    check_driver_log(combined, scenario.policies)
    ids = [a.message.message_id for a in combined.attempts]
    assert len(ids) == len(set(ids)), "a message was released twice across the restart"


@PROPERTY
@given(
    min_gap=st.floats(0.5, 120),
    jitter_min=st.floats(0, 30),
    jitter_width=st.floats(0.01, 60),
    seed=st.integers(0, 2**32),
)
def test_gaps_stay_inside_the_jitter_range_and_vary(
    min_gap: float, jitter_min: float, jitter_width: float, seed: int
) -> None:
    """With a backlog and nothing else binding, each gap is min_gap + uniform(jitter range)."""
    policy = replace(
        OPEN_POLICY,
        min_gap_seconds=min_gap,
        jitter_min_seconds=jitter_min,
        jitter_max_seconds=jitter_min + jitter_width,
        typing=True,
        typing_chars_per_second=10.0,
        typing_max_seconds=min_gap,  # typing fits inside every gap
    )
    clock = FakeClock()
    scheduler = Scheduler(clock, random.Random(seed))
    scheduler.configure("a", policy, clock.t)
    scheduler.set_ready("a", True)
    driver = Driver(scheduler, clock)
    for seq in range(40):
        driver.arrive(message(seq, text_length=seq * 7))
    driver.run(clock.t + 40 * 250)
    times = [a.at for a in driver.sent("a")]
    assert len(times) == 40
    gaps = [b - a for a, b in itertools.pairwise(times)]
    low, high = min_gap + jitter_min, min_gap + jitter_min + jitter_width
    assert all(low - EPS <= g <= high + EPS for g in gaps)
    assert len({round(g, 9) for g in gaps}) > 1, "the jitter is constant"
    # Uniform over the range: 39 draws leave neither end of it empty.
    assert min(gaps) < low + jitter_width / 2 < max(gaps)
    # Typing happens inside the gap: composing starts after the previous send.
    for before, after in itertools.pairwise(driver.sent("a")):
        assert after.released_at >= before.at - EPS


@settings(PROPERTY, max_examples=25)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=12),
    big=st.integers(500, 3000),
    priorities=st.booleans(),
)
def test_a_huge_queue_does_not_delay_other_instances(
    sizes: list[int], big: int, priorities: bool
) -> None:
    """Every small instance sends at exactly the times it would alone: its first message at
    once, then one per gap (fixed here, so the times are known in advance)."""
    alone = _send_times(sizes, 0, priorities)
    crowded = _send_times(sizes, big, priorities)
    assert crowded == alone
    for name, size in zip(sorted(alone), [sizes[int(n[5:])] for n in sorted(alone)], strict=True):
        assert alone[name] == [_FAIR_START + 10.0 * k for k in range(size)]


_FAIR_START = 1_715_000_000.0


def _send_times(sizes: list[int], big: int, priorities: bool) -> dict[str, list[float]]:
    policy = replace(OPEN_POLICY, jitter_max_seconds=0.0)
    clock = FakeClock(_FAIR_START)
    scheduler = Scheduler(clock, random.Random(0))
    driver = Driver(scheduler, clock, check_order=big < 1000)
    seqs = itertools.count()
    names = [f"small{n}" for n in range(len(sizes))]
    for name, size in [("big", big), *zip(names, sizes, strict=True)]:
        scheduler.configure(name, policy, clock.t)
        scheduler.set_ready(name, True)
        for k in range(size):
            priority = k % 3 if priorities else 0
            driver.arrive(message(next(seqs), name, f"c{k % 50}", priority=priority))
    driver.run(clock.t + 3600)
    return {name: [a.at for a in driver.sent(name)] for name in names}


@settings(PROPERTY, max_examples=80)
@given(scenarios())
def test_no_message_is_released_before_its_reported_next_chance(scenario: Scenario) -> None:
    """After every arrival and every step, each queued message has a reason and a next
    chance, the instance names its next message, and no release ever comes before the last
    next chance reported for the released message (pauses, disconnects and arrivals in
    between included)."""
    driver, operator = build(scenario)
    guard_releases(driver, operator)
    scheduler = driver.scheduler
    reported: dict[str, float] = {}

    def look(instance: str) -> None:
        now = driver.clock.t
        queued = [m for m in driver.queued.values() if m.instance == instance]
        ahead = scheduler.waiting(instance)
        if not queued:
            assert ahead is None
            assert scheduler.stats(instance).next_send_at is None
            return
        assert ahead is not None, "something is queued but no next chance is reported"
        assert ahead.message_id in driver.queued
        assert ahead.next_attempt_at >= now - EPS
        assert scheduler.stats(instance).next_send_at is not None
        for m in queued:
            report = scheduler.waiting(instance, m.message_id)
            assert report is not None
            assert report.message_id == m.message_id
            assert report.next_attempt_at >= now - EPS
            reported[m.message_id] = report.next_attempt_at
        assert reported[ahead.message_id] == ahead.next_attempt_at

    enqueue, release, step = driver.enqueue, driver._release, driver.step

    def enqueue_and_look(m: Outgoing) -> None:
        enqueue(m)
        look(m.instance)

    def checked_release(r: Release, now: float) -> None:
        at = reported[r.message.message_id]
        assert now >= at - EPS, f"released at {now}, before its next chance {at}"
        release(r, now)

    def step_and_look() -> None:
        step()
        for instance in scenario.policies:
            look(instance)

    driver.enqueue = enqueue_and_look  # type: ignore[method-assign]
    driver._release = checked_release  # type: ignore[method-assign]
    driver.step = step_and_look  # type: ignore[method-assign]
    for at, m in scenario.arrivals:
        driver.arrive(m, at)
    for at, instance, action in scenario.toggles:
        driver.at(at, functools.partial(operator.apply, instance, action))
    driver.run(scenario.start + 6 * DAY)
    check_driver_log(driver, scenario.policies)
    _check_accounting(driver, scenario)
