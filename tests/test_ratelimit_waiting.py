"""`Scheduler.waiting`: why a queued message waits and when it can go, in virtual time."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.test_ratelimit_sim import OPEN_POLICY, START, Driver, FakeClock, message
from zapgate.ratelimit.policy import SendPolicy
from zapgate.ratelimit.scheduler import Scheduler
from zapgate.ratelimit.waiting import Waiting, WaitReason

HOUR = 3600.0
DAY = 86_400.0
STEADY = replace(OPEN_POLICY, jitter_max_seconds=0.0)  # gaps of exactly 10 s


def setup(
    policy: SendPolicy = STEADY, *, warmup_started_at: float = START - 30 * DAY
) -> tuple[Scheduler, FakeClock, Driver]:
    clock = FakeClock()
    scheduler = Scheduler(clock, random.Random(7))
    scheduler.configure("a", policy, warmup_started_at)
    scheduler.set_ready("a", True)
    return scheduler, clock, Driver(scheduler, clock, policies={"a": policy})


def waiting(scheduler: Scheduler, message_id: str | None = None) -> Waiting:
    found = scheduler.waiting("a", message_id)
    assert found is not None
    return found


def released_at(driver: Driver, message_id: str) -> float:
    [attempt] = [a for a in driver.attempts if a.message.message_id == message_id]
    return attempt.released_at


def test_nothing_queued_reports_nothing() -> None:
    scheduler, _, driver = setup()
    assert scheduler.waiting("a") is None
    assert scheduler.waiting("nobody") is None
    driver.enqueue(message(1))
    assert scheduler.waiting("a", "a-404") is None
    assert scheduler.stats("a").waiting == waiting(scheduler)


def test_a_message_scheduled_later_waits_for_its_send_at_and_goes_then() -> None:
    """The known bug: the only queued message waits for its send_at, and the stats had no
    next send time because the plan ignores messages that are not due yet."""
    policy = replace(STEADY, typing=True, typing_chars_per_second=5, typing_max_seconds=15)
    scheduler, _, driver = setup(policy)
    driver.enqueue(message(1, not_before=START + HOUR, text_length=40))
    report = waiting(scheduler)
    assert report == Waiting("a-1", WaitReason.SEND_AT, START + HOUR)
    stats = scheduler.stats("a")
    assert stats.waiting == report
    assert stats.next_send_at == START + HOUR
    driver.run(START + 2 * HOUR)
    assert released_at(driver, "a-1") == START + HOUR


def test_quiet_hours_hold_a_message_until_the_window_ends() -> None:
    zone = "America/Sao_Paulo"
    policy = replace(STEADY, timezone=zone, quiet_start_hour=22, quiet_end_hour=8)
    scheduler, clock, driver = setup(policy)
    clock.t = datetime(2024, 5, 6, 23, 0, tzinfo=ZoneInfo(zone)).timestamp()
    morning = datetime(2024, 5, 7, 8, 0, tzinfo=ZoneInfo(zone)).timestamp()
    driver.enqueue(message(1, not_before=clock.t))
    assert waiting(scheduler) == Waiting("a-1", WaitReason.QUIET_HOURS, morning)
    assert scheduler.stats("a").next_send_at == morning
    driver.run(morning + HOUR)
    assert released_at(driver, "a-1") == morning


def test_with_typing_the_release_comes_before_the_window_ends() -> None:
    """Composing starts inside quiet hours so that the send lands on its first second."""
    policy = replace(
        STEADY,
        quiet_start_hour=22,
        quiet_end_hour=8,
        typing=True,
        typing_chars_per_second=1,
        typing_max_seconds=20,
    )
    scheduler, clock, driver = setup(policy)
    clock.t = datetime(2024, 5, 6, 23, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    morning = datetime(2024, 5, 7, 8, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    driver.enqueue(message(1, not_before=clock.t, text_length=100))  # 20 s of typing
    report = waiting(scheduler)
    assert report.reason is WaitReason.QUIET_HOURS
    assert report.next_attempt_at == morning - 20
    assert scheduler.stats("a").next_send_at == morning
    driver.run(morning + HOUR)
    assert released_at(driver, "a-1") == morning - 20


def test_the_gap_after_a_send_and_the_queue_and_chat_order_behind_it() -> None:
    scheduler, _, driver = setup()
    driver.enqueue(message(1, recipient="ana"))
    driver.enqueue(message(2, recipient="ana"))
    driver.enqueue(message(3, recipient="bia"))
    driver.run(START + 1)  # a-1 went out at START
    assert waiting(scheduler) == Waiting("a-2", WaitReason.GAP, START + 10)
    # Behind a-2, but a-2 may still be cancelled: then a-3 goes at the end of the gap.
    assert waiting(scheduler, "a-3") == Waiting("a-3", WaitReason.QUEUE, START + 10)
    driver.enqueue(message(4, recipient="bia", priority=5))  # lifts bia's lane ahead
    assert waiting(scheduler).message_id == "a-3"
    assert waiting(scheduler, "a-4").reason is WaitReason.CHAT_ORDER
    driver.run(START + HOUR)
    for message_id, at in [("a-3", START + 10), ("a-4", START + 20), ("a-2", START + 30)]:
        assert released_at(driver, message_id) == at


def test_a_message_in_flight_holds_the_next_one() -> None:
    scheduler, _, driver = setup(replace(STEADY, min_gap_seconds=0.0))
    driver.enqueue(message(1))
    driver.enqueue(message(2))
    driver.step()  # a-1 is released; its send is not reported yet
    assert "a" in driver.in_flight
    assert waiting(scheduler) == Waiting("a-2", WaitReason.IN_FLIGHT, START)
    assert scheduler.waiting("a", "a-1") is None  # no longer queued


def test_minute_and_hour_caps() -> None:
    scheduler, _, driver = setup(replace(STEADY, min_gap_seconds=1.0, per_minute=2))
    for seq in range(3):
        driver.enqueue(message(seq))
    driver.run(START + 5)
    assert waiting(scheduler) == Waiting("a-2", WaitReason.MINUTE_CAP, START + 60)

    scheduler, _, driver = setup(replace(STEADY, min_gap_seconds=1.0, per_hour=2))
    for seq in range(3):
        driver.enqueue(message(seq))
    driver.run(START + 5)
    assert waiting(scheduler) == Waiting("a-2", WaitReason.HOUR_CAP, START + HOUR)


def test_the_day_cap_and_the_warm_up() -> None:
    midnight = datetime(2024, 5, 7, tzinfo=ZoneInfo("UTC")).timestamp()
    scheduler, _, driver = setup(replace(STEADY, per_day=1))
    driver.enqueue(message(1))
    driver.enqueue(message(2))
    driver.run(START + 5)
    assert waiting(scheduler) == Waiting("a-2", WaitReason.DAY_CAP, midnight)

    warming = replace(STEADY, per_day=100, warmup_days=7, warmup_first_day_cap=1)
    scheduler, _, driver = setup(warming, warmup_started_at=START)
    driver.enqueue(message(1))
    driver.enqueue(message(2))
    driver.run(START + 5)
    assert waiting(scheduler) == Waiting("a-2", WaitReason.WARMUP, midnight)


def test_new_contacts_wait_for_the_next_day() -> None:
    midnight = datetime(2024, 5, 7, tzinfo=ZoneInfo("UTC")).timestamp()
    scheduler, _, driver = setup(replace(STEADY, new_contacts_per_day=1))
    driver.enqueue(message(1, recipient="ana"))
    driver.enqueue(message(2, recipient="bia"))
    driver.enqueue(message(3, recipient="caio", known=True))
    driver.run(START + 1)
    assert waiting(scheduler) == Waiting("a-3", WaitReason.GAP, START + 10)
    assert waiting(scheduler, "a-2") == Waiting("a-2", WaitReason.NEW_CONTACT_CAP, midnight)
    driver.run(START + HOUR)
    assert waiting(scheduler) == Waiting("a-2", WaitReason.NEW_CONTACT_CAP, midnight)
    driver.run(midnight + HOUR)
    assert released_at(driver, "a-2") == midnight


def test_paused_and_not_connected_name_the_earliest_time_once_lifted() -> None:
    scheduler, _, driver = setup()
    driver.enqueue(message(1))
    driver.enqueue(message(2))
    driver.run(START + 1)
    scheduler.set_ready("a", False)
    assert waiting(scheduler) == Waiting("a-2", WaitReason.NOT_CONNECTED, START + 10)
    scheduler.pause("a", "operator")
    assert waiting(scheduler).reason is WaitReason.PAUSED
    assert scheduler.stats("a").next_send_at == START + 10
    scheduler.resume("a")
    scheduler.set_ready("a", True)
    assert waiting(scheduler) == Waiting("a-2", WaitReason.GAP, START + 10)


def test_looking_changes_no_release() -> None:
    """Asking at every step gives the same send log as never asking."""

    def log(ask: bool) -> list[tuple[str, float]]:
        policy = replace(OPEN_POLICY, per_minute=3, new_contacts_per_day=2, typing=True)
        scheduler, _, driver = setup(policy)
        for seq in range(12):
            later = START + (seq % 4) * 100
            driver.arrive(message(seq, "a", f"r{seq % 5}", not_before=later, priority=seq % 3))
        for step in range(3 * 144):  # three days, looking every ten minutes
            if ask:
                for m in list(driver.queued.values()):
                    assert scheduler.waiting("a", m.message_id) is not None
                scheduler.stats("a")
            driver.run(START + step * 600)
        return [(a.message.message_id, a.released_at) for a in driver.attempts]

    without = log(ask=False)
    assert len(without) == 12
    assert log(ask=True) == without
