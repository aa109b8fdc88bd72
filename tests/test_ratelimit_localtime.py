"""Local days and quiet hours across DST changes, checked against zoneinfo directly."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zapgate.ratelimit.localtime import LocalCalendar

ZONES = [
    "America/Sao_Paulo",
    "Europe/Berlin",
    "America/Havana",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "UTC",
]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("UTC")).timestamp()


def local_hour(t: float, zone: str) -> int:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).hour


def test_a_day_that_begins_at_one_in_the_morning() -> None:
    """Sao Paulo, 2018-11-04: clocks jumped from 00:00 to 01:00, so the day began at the jump
    and lasted 23 hours."""
    calendar = LocalCalendar("America/Sao_Paulo")
    start = calendar.day_start(date(2018, 11, 4))
    assert start == utc(2018, 11, 4, 3)  # 00:00 -03 == 01:00 -02
    assert datetime.fromtimestamp(start, calendar.zone).hour == 1
    assert calendar.day(start - 1) == date(2018, 11, 3)
    assert calendar.day_start(date(2018, 11, 5)) - start == 23 * 3600
    assert calendar.next_day_start(start - 1) == start


def test_a_day_that_lasts_25_hours() -> None:
    """Sao Paulo, 2018-02-17: at midnight clocks went back to 23:00."""
    calendar = LocalCalendar("America/Sao_Paulo")
    day = calendar.day_start(date(2018, 2, 17))
    assert calendar.day_start(date(2018, 2, 18)) - day == 25 * 3600


def test_a_midnight_gap_in_havana() -> None:
    calendar = LocalCalendar("America/Havana")
    start = calendar.day_start(date(2024, 3, 10))
    assert datetime.fromtimestamp(start, calendar.zone).hour == 1
    assert calendar.day(start - 1) == date(2024, 3, 9)


def test_quiet_hours_that_end_inside_a_gap_end_at_the_jump() -> None:
    """Berlin, 2024-03-31: 02:00 never happened (01:59:59 CET -> 03:00 CEST)."""
    calendar = LocalCalendar("Europe/Berlin", 22, 2)
    inside = utc(2024, 3, 30, 23)  # 00:00 CET
    assert calendar.is_quiet(inside)
    assert calendar.quiet_until(inside) == utc(2024, 3, 31, 1)  # the jump, 03:00 CEST


def test_quiet_hours_that_end_in_a_fold_end_at_the_first_pass() -> None:
    """Berlin, 2024-10-27: 02:00-02:59 happened twice; quiet hours ending at 02:00 end at
    the first 02:00 (CEST), and 02:xx is not quiet on either pass."""
    calendar = LocalCalendar("Europe/Berlin", 22, 2)
    assert calendar.quiet_until(utc(2024, 10, 26, 21)) == utc(2024, 10, 27, 0)  # 02:00 CEST
    assert not calendar.is_quiet(utc(2024, 10, 27, 1, 30))  # 02:30 CET, the second pass


def test_quiet_hours_over_a_fold_last_one_hour_longer() -> None:
    calendar = LocalCalendar("Europe/Berlin", 1, 3)
    start = utc(2024, 10, 26, 23)  # 01:00 CEST
    assert calendar.is_quiet(start)
    assert calendar.quiet_until(start) - start == 3 * 3600  # 01:00 CEST .. 03:00 CET


def test_a_thirty_minute_gap_on_lord_howe() -> None:
    """Lord Howe, 2024-10-06: clocks jumped from 02:00 to 02:30."""
    calendar = LocalCalendar("Australia/Lord_Howe", 23, 2)
    inside = datetime(2024, 10, 6, 1, 0, tzinfo=calendar.zone).timestamp()
    until = calendar.quiet_until(inside)
    assert until - inside == 3600  # 01:00 -> the jump at 02:00, which reads 02:30
    assert datetime.fromtimestamp(until, calendar.zone).strftime("%H:%M") == "02:30"


def test_outside_quiet_hours_nothing_moves() -> None:
    calendar = LocalCalendar("UTC", 22, 6)
    t = utc(2024, 6, 1, 12)
    assert calendar.quiet_until(t) == t
    assert LocalCalendar("UTC").quiet_until(t) == t


@pytest.mark.parametrize(("start", "end"), [(9, 17), (22, 6), (0, 1), (23, 0)])
def test_quiet_hours_follow_the_hour_rule(start: int, end: int) -> None:
    calendar = LocalCalendar("UTC", start, end)
    for hour in range(24):
        quiet = start <= hour < end if start < end else (hour >= start or hour < end)
        assert calendar.quiet_hour(hour) == quiet


# Whole microseconds: datetime.fromtimestamp rounds to them, so a float a few hundred
# nanoseconds before midnight already reads as the next day.
moments = st.integers(int(utc(2017, 1, 1)) * 10**6, int(utc(2025, 12, 31)) * 10**6).map(
    lambda us: us / 10**6
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(ZONES), moments)
def test_every_moment_lies_in_its_local_day(zone: str, t: float) -> None:
    calendar = LocalCalendar(zone)
    day = calendar.day(t)
    start, end = calendar.day_start(day), calendar.next_day_start(t)
    assert start <= t < end
    assert calendar.day(start) == day
    assert calendar.day(start - 1) == day - timedelta(days=1)
    assert calendar.day(end) == day + timedelta(days=1)
    assert 22 * 3600 <= end - start <= 26 * 3600


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.sampled_from(ZONES),
    moments,
    st.tuples(st.integers(0, 23), st.integers(0, 23)).filter(lambda q: q[0] != q[1]),
)
def test_quiet_until_is_the_first_moment_outside_quiet_hours(
    zone: str, t: float, quiet: tuple[int, int]
) -> None:
    start, end = quiet
    calendar = LocalCalendar(zone, start, end)

    def quiet_at(x: float) -> bool:
        hour = local_hour(x, zone)
        return start <= hour < end if start < end else (hour >= start or hour < end)

    until = calendar.quiet_until(t)
    assert until >= t
    assert not quiet_at(until)
    if until > t:
        assert quiet_at(t)
        assert quiet_at(until - 0.001)
        probe = t  # quiet all the way: sample every 5 minutes
        while probe < until:
            assert quiet_at(probe)
            probe += 300
