"""The send scheduler, one behaviour at a time, in virtual time."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.test_ratelimit_sim import (
    EPS,
    OPEN_POLICY,
    START,
    Driver,
    FakeClock,
    check_driver_log,
    expected_day_cap,
    local_date,
    message,
)
from zapgate.ratelimit.decisions import Expiry, Release
from zapgate.ratelimit.errors import StateError
from zapgate.ratelimit.health import ERROR_463, ERROR_RUN, LOW_DELIVERY, PauseRules
from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy
from zapgate.ratelimit.scheduler import Scheduler

HOUR = 3600.0
DAY = 86_400.0


def setup(
    policy: SendPolicy = OPEN_POLICY, *, instances: tuple[str, ...] = ("a",), ready: bool = True
) -> tuple[Scheduler, FakeClock, Driver]:
    clock = FakeClock()
    scheduler = Scheduler(clock, random.Random(7))
    for name in instances:
        scheduler.configure(name, policy, START - 30 * DAY)
        scheduler.set_ready(name, ready)
    driver = Driver(scheduler, clock, policies=dict.fromkeys(instances, policy))
    return scheduler, clock, driver


def release_now(scheduler: Scheduler) -> Release:
    decisions = scheduler.due()
    assert len(decisions) == 1
    assert isinstance(decisions[0], Release)
    return decisions[0]


# -- misuse ---------------------------------------------------------------------------------


def test_misuse_is_refused_with_a_clear_error() -> None:
    scheduler, _, _ = setup()
    with pytest.raises(KeyError, match="not configured"):
        scheduler.enqueue(message(1, "nobody"))
    with pytest.raises(ValueError, match="per_minute"):
        scheduler.configure("b", replace(OPEN_POLICY, per_minute=0), START)
    scheduler.enqueue(message(1))
    with pytest.raises(ValueError, match="already queued"):
        scheduler.enqueue(message(1))
    with pytest.raises(ValueError, match="text_length"):
        scheduler.enqueue(replace(message(2), text_length=-1))
    release = release_now(scheduler)
    with pytest.raises(ValueError, match="in flight"):
        scheduler.enqueue(release.message)
    with pytest.raises(ValueError, match="not in flight"):
        scheduler.on_sent("a", "a-999")
    scheduler.on_sent("forgotten", "x")  # a forgotten instance: ignored


# -- order ----------------------------------------------------------------------------------


def test_higher_priority_goes_first_and_fifo_within_a_priority() -> None:
    scheduler, _clock, driver = setup()
    scheduler.set_ready("a", False)
    for seq, priority in enumerate([0, 0, 2, 1, 2, 0]):
        driver.enqueue(message(seq, priority=priority))
    scheduler.set_ready("a", True)
    driver.run(START + HOUR)
    assert [a.message.seq for a in driver.sent("a")] == [2, 4, 3, 0, 1, 5]


def test_an_urgent_message_lifts_the_older_ones_to_its_recipient() -> None:
    """Priority inheritance: the recipient's older message goes first (order kept), and
    both go before the backlog to other recipients."""
    scheduler, _, driver = setup()
    scheduler.set_ready("a", False)
    for seq in range(5):
        driver.enqueue(message(seq, recipient=f"other{seq}"))
    driver.enqueue(message(5, recipient="vip"))
    driver.enqueue(message(6, recipient="other9"))
    driver.enqueue(message(7, recipient="vip", priority=9))
    scheduler.set_ready("a", True)
    driver.run(START + HOUR)
    assert [a.message.seq for a in driver.sent("a")] == [5, 7, 0, 1, 2, 3, 4, 6]


def test_a_message_scheduled_for_later_does_not_hold_up_its_recipient() -> None:
    _scheduler, _, driver = setup()
    driver.enqueue(message(0, recipient="r", not_before=START + DAY))
    driver.enqueue(message(1, recipient="r"))
    driver.run(START + 2 * DAY)
    sent = driver.sent("a")
    assert [a.message.seq for a in sent] == [1, 0]
    assert sent[0].at == START
    assert sent[1].at == START + DAY


def test_once_due_an_older_message_goes_before_a_newer_one_to_the_same_recipient() -> None:
    scheduler, clock, driver = setup()
    scheduler.set_ready("a", False)
    driver.enqueue(message(0, recipient="r", not_before=START + 60))
    driver.enqueue(message(1, recipient="r"))
    clock.t = START + 120
    scheduler.set_ready("a", True)
    driver.run(START + HOUR)
    assert [a.message.seq for a in driver.sent("a")] == [0, 1]


# -- cancel, expiry, pause, readiness -------------------------------------------------------


def test_cancel_works_only_while_queued() -> None:
    scheduler, _, driver = setup()
    for seq in range(3):
        driver.enqueue(message(seq))
    assert scheduler.cancel("a", "a-2")
    assert not scheduler.cancel("a", "a-2")
    assert not scheduler.cancel("a", "a-404")
    assert not scheduler.cancel("nobody", "a-0")
    release = release_now(scheduler)
    assert not scheduler.cancel("a", release.message.message_id)  # in flight
    scheduler.on_sent("a", release.message.message_id)
    assert not scheduler.cancel("a", release.message.message_id)  # sent
    assert scheduler.stats("a").queued == 1


def test_cancelling_the_whole_queue_leaves_nothing_to_wake_for() -> None:
    scheduler, _, driver = setup(ready=False)
    for seq in range(500):
        driver.enqueue(message(seq, expires_at=START + DAY + seq))
    for seq in range(500):
        assert scheduler.cancel("a", f"a-{seq}")
    assert scheduler.next_wakeup() is None
    assert scheduler.due() == []


def test_a_message_expires_at_its_expiry_while_paused() -> None:
    scheduler, clock, _ = setup()
    scheduler.pause("a", "operator")
    scheduler.enqueue(message(0, expires_at=START + 90))
    assert scheduler.next_wakeup() == START + 90
    clock.t = START + 89.9
    assert scheduler.due() == []
    clock.t = START + 90
    assert scheduler.due() == [Expiry(message(0, expires_at=START + 90))]
    assert scheduler.next_wakeup() is None


def test_a_message_that_cannot_be_sent_before_its_expiry_is_never_released() -> None:
    _scheduler, _, driver = setup(replace(OPEN_POLICY, min_gap_seconds=60, jitter_max_seconds=0))
    driver.enqueue(message(0))
    driver.enqueue(message(1, expires_at=START + 30))  # the gap ends at START + 60
    driver.enqueue(message(2, expires_at=START + 61))
    driver.run(START + HOUR)
    assert [a.message.seq for a in driver.sent("a")] == [0, 2]
    assert [(t, m.seq) for t, m in driver.expired] == [(START + 30, 1)]


def test_expiries_come_in_batches_without_starving_other_instances() -> None:
    scheduler, clock, driver = setup(instances=("big", "small"))
    scheduler.set_ready("big", False)
    for seq in range(1000):
        driver.enqueue(message(seq, "big", expires_at=START + 10))
    driver.enqueue(message(5000, "small", not_before=START + 10))
    clock.t = START + 10
    first = scheduler.due(limit=300)
    assert 256 <= len(first) <= 300  # one visit handles at most 256 expiries
    assert [d.message.seq for d in first if isinstance(d, Release)] == [5000]  # not starved
    rest: list[object] = []
    while (wake := scheduler.next_wakeup()) is not None and wake <= clock.t:
        rest.extend(scheduler.due())
    everything = first + rest
    assert sum(isinstance(d, Expiry) for d in everything) == 1000


def test_pause_and_resume() -> None:
    scheduler, _clock, driver = setup()
    scheduler.pause("a", "operator: campaign review")
    for seq in range(3):
        driver.enqueue(message(seq))
    assert scheduler.paused_reason("a") == "operator: campaign review"
    driver.run(START + DAY)
    assert driver.attempts == []
    assert scheduler.stats("a").queued == 3
    scheduler.resume("a")
    assert scheduler.paused_reason("a") is None
    driver.run(START + DAY + HOUR)
    assert len(driver.sent("a")) == 3
    assert driver.sent("a")[0].at == START + DAY


def test_an_instance_that_is_not_connected_waits_without_failing() -> None:
    scheduler, _clock, driver = setup(ready=False)
    driver.enqueue(message(0))
    driver.enqueue(message(1, expires_at=START + 2 * DAY))
    assert scheduler.next_wakeup() == START + 2 * DAY  # only the expiry
    driver.run(START + DAY)
    assert driver.attempts == []
    assert driver.expired == []
    scheduler.set_ready("a", True)
    driver.run(START + DAY + HOUR)
    assert [a.message.seq for a in driver.sent("a")] == [0, 1]


def test_a_disconnect_while_sending_lets_the_send_finish() -> None:
    scheduler, _, driver = setup()
    driver.enqueue(message(0))
    driver.enqueue(message(1))
    release = release_now(scheduler)
    scheduler.set_ready("a", False)
    scheduler.on_sent("a", release.message.message_id)
    assert scheduler.due() == []
    assert scheduler.stats("a").queued == 1


# -- auto-pause -----------------------------------------------------------------------------


def test_three_failures_in_a_row_pause_the_instance() -> None:
    scheduler, _, driver = setup()
    driver.outcome = lambda m: "not on whatsapp" if m.seq in (1, 3, 4, 5) else None
    for seq in range(8):
        driver.enqueue(message(seq))
    driver.run(START + HOUR)
    assert [a.message.seq for a in driver.attempts] == [0, 1, 2, 3, 4, 5]
    assert len(driver.failure_pauses) == 1
    reason = driver.failure_pauses[0][1]
    assert reason.startswith(f"{ERROR_RUN}: 3 sends failed in a row")
    assert scheduler.paused_reason("a") == reason
    assert scheduler.stats("a").failures_in_a_row == 3
    scheduler.resume("a")
    assert scheduler.stats("a").failures_in_a_row == 0
    driver.outcome = lambda _m: None
    driver.run(START + 2 * HOUR)
    assert len(driver.sent("a")) == 4


def test_whatsapp_error_463_pauses_at_once() -> None:
    scheduler, _, _ = setup()
    scheduler.enqueue(message(0))
    release = release_now(scheduler)
    reason = scheduler.on_failed("a", release.message.message_id, "server returned error 463")
    assert reason is not None
    assert reason.startswith(ERROR_463)
    assert scheduler.paused_reason("a") == reason


def test_other_numbers_that_contain_463_are_not_463() -> None:
    scheduler, _, _ = setup()
    scheduler.enqueue(message(0))
    release = release_now(scheduler)
    assert scheduler.on_failed("a", release.message.message_id, "error 14630") is None


def test_a_failure_while_paused_keeps_the_operator_reason() -> None:
    scheduler, _, _ = setup()
    scheduler.enqueue(message(0))
    release = release_now(scheduler)
    scheduler.pause("a", "operator")
    assert scheduler.on_failed("a", release.message.message_id, "error 463") is None
    assert scheduler.paused_reason("a") == "operator"


def test_undelivered_sends_pause_the_instance_when_the_next_release_is_due() -> None:
    rules = PauseRules(receipt_grace_seconds=600, delivery_window=20, min_delivery_ratio=0.5)
    clock = FakeClock()
    scheduler = Scheduler(clock, random.Random(1), rules)
    scheduler.configure("a", OPEN_POLICY, START)
    scheduler.set_ready("a", True)
    driver = Driver(scheduler, clock)
    # Only one send in three is delivered, and nothing after the 30th: no receipt can
    # trigger the check, the next due release does.
    driver.receipt_delay = lambda m: 5.0 if m.seq % 3 == 0 and m.seq < 30 else None
    for seq in range(200):
        driver.enqueue(message(seq))
    driver.run(START + 2 * HOUR)
    assert driver.receipt_pauses == []
    assert len(driver.auto_pauses) == 1
    pause_at, pause = driver.auto_pauses[0]
    assert pause.instance == "a"
    assert pause.reason.startswith(f"{LOW_DELIVERY}: 7 of the last 20 judged sends")
    sent = driver.sent("a")
    # Judged once the 20th send's grace ran out, at the next release after that.
    assert sent[19].at + 600 <= pause_at <= sent[19].at + 600 + 15
    assert all(a.at <= pause_at for a in sent)
    assert scheduler.paused_reason("a") == pause.reason
    rate = scheduler.stats("a").delivery_rate
    assert rate is not None
    assert rate < 0.5
    scheduler.resume("a")
    assert scheduler.stats("a").delivery_rate is None  # a fresh start
    driver.run(START + 3 * HOUR)
    assert len(driver.sent("a")) > len(sent)


def test_a_healthy_delivery_rate_never_pauses() -> None:
    _scheduler, _, driver = setup()
    driver.receipt_delay = lambda m: None if m.seq % 3 == 0 else 30.0  # 2/3 delivered
    for seq in range(100):
        driver.enqueue(message(seq))
    driver.run(START + DAY)
    assert len(driver.sent("a")) == 100
    assert driver.auto_pauses == []
    assert driver.receipt_pauses == []


def test_a_receipt_that_settles_a_bad_window_pauses_right_away() -> None:
    rules = PauseRules(receipt_grace_seconds=60, delivery_window=4, min_delivery_ratio=0.5)
    clock = FakeClock()
    scheduler = Scheduler(clock, random.Random(1), rules)
    scheduler.configure("a", OPEN_POLICY, START)
    scheduler.set_ready("a", True)
    for seq in range(4):
        scheduler.enqueue(message(seq))
        clock.t = max(clock.t, scheduler.next_wakeup() or clock.t)
        scheduler.on_sent("a", release_now(scheduler).message.message_id)
    clock.t += 3600
    reason = scheduler.on_receipt("a", "a-3")  # too late: a-0..a-3 already settled
    assert reason is not None
    assert reason.startswith(LOW_DELIVERY)
    assert scheduler.paused_reason("a") == reason


def test_not_sent_counts_nothing() -> None:
    scheduler, _, _ = setup(replace(OPEN_POLICY, min_gap_seconds=100))
    scheduler.enqueue(message(0))
    scheduler.enqueue(message(1))
    release = release_now(scheduler)
    scheduler.on_not_sent("a", release.message.message_id)
    assert release_now(scheduler).message.seq == 1  # at once: no gap, no count
    stats = scheduler.stats("a")
    assert stats.sent_today == 0
    assert stats.failures_in_a_row == 0


# -- caps -----------------------------------------------------------------------------------


def test_new_contacts_wait_for_the_next_day_while_known_ones_go_on() -> None:
    policy = replace(OPEN_POLICY, new_contacts_per_day=2, timezone="America/Sao_Paulo")
    _scheduler, _, driver = setup(policy)
    for seq in range(5):
        driver.enqueue(message(seq, recipient=f"new{seq}"))
    driver.enqueue(message(5, recipient="friend", known=True))
    driver.enqueue(message(6, recipient="new0"))  # known once new0 got its first message
    driver.run(START + 3 * DAY)
    sent = driver.sent("a")
    day0 = local_date(START, "America/Sao_Paulo")
    today = [a.message.seq for a in sent if local_date(a.at, "America/Sao_Paulo") == day0]
    assert today == [0, 1, 5, 6]
    assert len(sent) == 7
    check_driver_log(driver, {"a": (policy, START - 30 * DAY)}, {"a": {"friend"}})


def test_zero_new_contacts_sends_to_known_contacts_only() -> None:
    scheduler, _, driver = setup(replace(OPEN_POLICY, new_contacts_per_day=0))
    driver.enqueue(message(0, recipient="stranger"))
    driver.enqueue(message(1, recipient="friend", known=True))
    driver.run(START + 3 * DAY)
    assert [a.message.seq for a in driver.sent("a")] == [1]
    assert scheduler.stats("a").queued == 1


def test_a_new_number_warms_up_day_by_day() -> None:
    zone = "Europe/Berlin"
    policy = replace(
        OPEN_POLICY,
        timezone=zone,
        per_day=100,
        warmup_days=5,
        warmup_first_day_cap=10,
        min_gap_seconds=60,
    )
    clock = FakeClock()
    scheduler = Scheduler(clock, random.Random(5))
    scheduler.configure("a", policy, START)
    scheduler.set_ready("a", True)
    driver = Driver(scheduler, clock)
    for seq in range(600):
        driver.enqueue(message(seq, recipient=f"r{seq % 40}", known=True))
    driver.run(START + 8 * DAY)
    day0 = local_date(START, zone)
    per_day: dict[int, int] = {}
    for a in driver.sent("a"):
        number = (local_date(a.at, zone) - day0).days + 1
        per_day[number] = per_day.get(number, 0) + 1
    assert [per_day[d] for d in range(1, 8)] == [expected_day_cap(policy, d) for d in range(1, 8)]
    assert [per_day[d] for d in range(1, 6)] == [10, 18, 32, 56, 100]
    assert scheduler.stats("a").warmup_day == 9


def test_quiet_hours_hold_sends_until_morning() -> None:
    zone = "America/Sao_Paulo"
    policy = replace(
        OPEN_POLICY, timezone=zone, quiet_start_hour=22, quiet_end_hour=8, jitter_max_seconds=0
    )
    scheduler, clock, driver = setup(policy)
    evening = datetime(2024, 5, 6, 21, 59, 30, tzinfo=ZoneInfo(zone)).timestamp()
    clock.t = evening
    for seq in range(6):
        driver.enqueue(message(seq, not_before=evening))
    driver.run(evening + DAY)
    times = [a.at for a in driver.sent("a")]
    morning = datetime(2024, 5, 7, 8, tzinfo=ZoneInfo(zone)).timestamp()
    assert times[:3] == [evening, evening + 10, evening + 20]
    assert times[3] == morning
    stats = scheduler.stats("a")
    assert stats.next_release_at is None


def test_typing_is_counted_inside_the_gap() -> None:
    """A 100-character text at 10 chars/s: composing starts 10 s before the send, and the
    sends stay one gap apart."""
    policy = replace(
        OPEN_POLICY,
        min_gap_seconds=30,
        jitter_max_seconds=0,
        typing=True,
        typing_chars_per_second=10,
        typing_max_seconds=60,
    )
    scheduler, _, driver = setup(policy)
    scheduler._instances["a"].counters.slot = replace(  # typing factor exactly 1
        scheduler._instances["a"].counters.slot, typing_fraction=0.5
    )
    scheduler._rng = _Fixed(0.5)
    for seq in range(3):
        driver.enqueue(message(seq, text_length=100))
    driver.enqueue(message(3, text_length=500))  # 50 s of typing: longer than the gap
    driver.run(START + HOUR)
    sent = driver.sent("a")
    assert [a.released_at for a in sent] == [START, START + 30, START + 60, START + 70]
    assert [a.at for a in sent] == [START + 10, START + 40, START + 70, START + 120]
    # The long text stretches its gap: composing starts when the previous send went out.


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


# -- stats, export, import ------------------------------------------------------------------


def test_stats_report_the_windows_and_the_next_send() -> None:
    policy = replace(
        OPEN_POLICY,
        per_minute=3,
        per_hour=5,
        per_day=50,
        new_contacts_per_day=4,
        jitter_max_seconds=0,
    )
    scheduler, _, driver = setup(policy)
    for seq in range(8):
        driver.enqueue(message(seq))
    driver.run(START + 25)
    stats = scheduler.stats("a")
    assert stats.sent_today == 3
    assert stats.remaining_minute == 0
    assert stats.remaining_hour == 2
    assert stats.remaining_today == 47
    assert stats.new_contacts_today == 3
    assert stats.remaining_new_contacts_today == 1
    assert stats.queued == 5
    assert stats.in_flight is None
    assert stats.next_release_at == START + 60  # the minute window is full
    assert stats.next_send_at == START + 60
    assert stats.ready
    assert stats.paused_reason is None


def test_export_and_import_keep_every_counter() -> None:
    policy = replace(DEFAULT_POLICY, quiet_start_hour=None, quiet_end_hour=None)
    scheduler, clock, driver = setup(policy)
    driver.receipt_delay = lambda m: 2.0 if m.seq % 2 else None
    for seq in range(12):
        driver.enqueue(message(seq))
    driver.run(START + 5 * 60)
    state = scheduler.export_state("a")
    restored = Scheduler(clock, random.Random(99))
    restored.configure("a", policy, START - 30 * DAY)
    restored.set_ready("a", True)
    restored.import_state("a", json.loads(json.dumps(state)))
    before, after = scheduler.stats("a"), restored.stats("a")
    for name in (
        "sent_today",
        "new_contacts_today",
        "remaining_minute",
        "remaining_hour",
        "remaining_today",
        "remaining_new_contacts_today",
        "delivery_rate",
        "delivery_sample",
        "failures_in_a_row",
    ):
        assert getattr(after, name) == getattr(before, name), name
    assert restored.export_state("a") == state
    # The gap after the last send carries over: the next message waits for it.
    for m in driver.queued.values():
        restored.enqueue(m)
    last = driver.sent("a")[-1].at
    assert restored.stats("a").next_send_at == before.next_send_at
    assert (
        restored.next_wakeup() or 0
    ) >= last + policy.min_gap_seconds - policy.typing_max_seconds


def test_a_message_in_flight_at_a_crash_counts_as_sent_and_is_not_released_again() -> None:
    policy = replace(OPEN_POLICY, per_minute=1)
    scheduler, clock, _ = setup(policy)
    scheduler.enqueue(message(0))
    scheduler.enqueue(message(1))
    release_now(scheduler)
    state = scheduler.export_state("a")
    assert state["in_flight"]["message_id"] == "a-0"
    restored = Scheduler(clock, random.Random(1))
    restored.configure("a", policy, START)
    restored.set_ready("a", True)
    restored.import_state("a", state)
    restored.enqueue(message(1))
    assert restored.stats("a").sent_today == 1
    assert restored.next_wakeup() == START + 60  # the per-minute cap counts the lost one


@pytest.mark.parametrize(
    "patch",
    [
        {"format": 2},
        {"recent_sends": "yesterday"},
        {"recent_sends": [1.0, "x"]},
        {"day": "31/12/2024"},
        {"sent_today": -1},
        {"sent_today": True},
        {"new_today": [1, 2]},
        {"last_attempt_at": "now"},
        {"gap_fraction": 1.5},
        {"failures_in_a_row": "3"},
        {"receipts": [["a-1", 1.0]]},
        {"receipts": [["a-1", 1.0, 1]]},
        {"paused": 42},
        {"in_flight": {"message_id": "a-1"}},
        {"in_flight": "a-1"},
    ],
)
def test_a_malformed_state_is_refused_and_changes_nothing(patch: dict[str, object]) -> None:
    scheduler, _, driver = setup()
    driver.enqueue(message(0))
    driver.run(START + 60)
    good = scheduler.export_state("a")
    with pytest.raises(StateError):
        scheduler.import_state("a", {**good, **patch})
    assert scheduler.export_state("a") == good


def test_dirty_names_the_instances_whose_state_changed() -> None:
    scheduler, _, _ = setup(instances=("a", "b"))
    assert scheduler.dirty() == set()
    scheduler.enqueue(message(0, "a"))
    scheduler.enqueue(message(1, "b"))
    assert scheduler.dirty() == set()  # the outbox holds the queue
    release = release_now_of(scheduler, "a")
    assert scheduler.dirty() == {"a", "b"}  # both released
    scheduler.mark_saved("a")
    scheduler.mark_saved("b")
    scheduler.on_sent("a", release.message.message_id)
    assert scheduler.dirty() == {"a"}
    assert scheduler.dirty() == {"a"}, "dirty until saved: a failed save is tried again"
    scheduler.mark_saved("a")
    assert scheduler.dirty() == set()
    scheduler.pause("b", "x")
    assert scheduler.dirty() == {"b"}
    scheduler.pause("a", "y")
    scheduler.resume("b")
    scheduler.mark_saved("a")  # saved explicitly: only b is left to save
    assert scheduler.dirty() == {"b"}


def release_now_of(scheduler: Scheduler, instance: str) -> Release:
    releases = [d for d in scheduler.due() if isinstance(d, Release)]
    return next(r for r in releases if r.message.instance == instance)


def test_forget_drops_the_instance_and_its_timers() -> None:
    scheduler, _, driver = setup(instances=("a", "b"))
    driver.enqueue(message(0, "a", not_before=START + 100))
    scheduler.forget("a")
    assert scheduler.next_wakeup() is None
    assert scheduler.instances() == ["b"]
    with pytest.raises(KeyError):
        scheduler.stats("a")


def test_the_timer_heap_stays_proportional_to_the_instances() -> None:
    scheduler, _clock, driver = setup(instances=tuple(f"i{n}" for n in range(50)))
    for seq in range(20_000):
        driver.enqueue(message(seq, f"i{seq % 50}", not_before=START + 10 * (seq % 997)))
    assert len(scheduler._heap) <= 2 * 50 + 1024
    assert max(len(i.queue._future) for i in scheduler._instances.values()) <= 2 * 400 + 64


def test_many_instances_share_the_clock_fairly() -> None:
    """100 instances with the same policy and backlog each send their share."""
    names = tuple(f"i{n}" for n in range(100))
    _scheduler, _clock, driver = setup(
        replace(OPEN_POLICY, min_gap_seconds=10, jitter_max_seconds=0), instances=names
    )
    for seq in range(3000):
        driver.arrive(message(seq, names[seq % 100]))
    driver.run(START + 95)
    counts = {name: len(driver.sent(name)) for name in names}
    assert set(counts.values()) == {10}
    policy = replace(OPEN_POLICY, min_gap_seconds=10, jitter_max_seconds=0)
    check_driver_log(driver, dict.fromkeys(names, (policy, START)))
    assert all(abs(a.scheduled_at - a.released_at) <= EPS for a in driver.attempts)
