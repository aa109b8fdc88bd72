"""Send policy: the anti-ban defaults, validation, the warm-up curve and typing times."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import replace

import pytest

from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy, daily_cap, typing_seconds

FIELDS = {f.name for f in dataclasses.fields(SendPolicy)}


def test_the_defaults_are_valid() -> None:
    assert DEFAULT_POLICY.violations() == []


def test_the_defaults_follow_the_field_notes() -> None:
    p = DEFAULT_POLICY
    # WAHA: random 30-60 s between messages.
    assert p.min_gap_seconds + p.jitter_min_seconds == 30
    assert p.min_gap_seconds + p.jitter_max_seconds == 60
    # whatsmeow #506: more than 5 per minute is very risky; baileys-antiban allows 8.
    assert 1 <= p.per_minute <= 5
    assert p.per_hour <= 200  # baileys-antiban's hourly cap
    # baileys-antiban: 7-day warm-up from 20 to 680 per day.
    assert (p.warmup_days, p.warmup_first_day_cap, p.per_day) == (7, 20, 680)
    assert p.new_contacts_per_day < p.per_day / 10  # cold outreach drives bans
    # Quiet at night: the small hours are always quiet.
    assert p.quiet_start_hour is not None
    assert p.quiet_end_hour is not None
    assert p.quiet_start_hour > p.quiet_end_hour  # wraps midnight
    assert all(h >= p.quiet_start_hour or h < p.quiet_end_hour for h in range(0, 6))
    # Typing grows with the text and fits inside the shortest gap.
    assert p.typing
    assert p.typing_max_seconds < p.min_gap_seconds + p.jitter_min_seconds


def test_the_default_warm_up_ramps_geometrically_from_20_to_680() -> None:
    caps = [daily_cap(DEFAULT_POLICY, day) for day in range(1, 10)]
    assert caps == [20, 36, 65, 117, 210, 378, 680, 680, 680]
    ratios = [b / a for a, b in itertools.pairwise(caps[:7])]
    assert max(ratios) - min(ratios) < 0.05  # the same growth every day


@pytest.mark.parametrize(
    ("days", "first", "per_day"), [(1, 5, 100), (2, 1, 1), (10, 1, 1000), (3, 7, 9), (30, 50, 51)]
)
def test_the_warm_up_is_monotone_and_ends_at_per_day(days: int, first: int, per_day: int) -> None:
    policy = replace(DEFAULT_POLICY, warmup_days=days, warmup_first_day_cap=first, per_day=per_day)
    caps = [daily_cap(policy, day) for day in range(-2, days + 3)]
    assert caps == sorted(caps)
    assert daily_cap(policy, 1) == (first if days > 1 else per_day)
    assert daily_cap(policy, days) == per_day
    assert daily_cap(policy, 0) == daily_cap(policy, 1)  # before the first day: day 1


def test_typing_grows_with_the_text_up_to_the_cap() -> None:
    p = replace(DEFAULT_POLICY, typing_chars_per_second=5.0, typing_max_seconds=15.0)
    assert typing_seconds(p, 0, 1.0) == 0
    assert typing_seconds(p, 10, 1.0) == pytest.approx(2.0)
    assert typing_seconds(p, 20, 1.0) == pytest.approx(4.0)
    assert typing_seconds(p, 20, 1.25) == pytest.approx(5.0)
    assert typing_seconds(p, 10_000, 1.0) == 15.0
    assert typing_seconds(replace(p, typing=False), 100, 1.0) == 0


BAD_VALUES = [
    ("min_gap_seconds", -1.0),
    ("min_gap_seconds", math.nan),
    ("min_gap_seconds", math.inf),
    ("jitter_min_seconds", -0.5),
    ("jitter_max_seconds", math.nan),
    ("per_minute", 0),
    ("per_hour", -3),
    ("per_day", 0),
    ("new_contacts_per_day", -1),
    ("timezone", "Mars/Olympus_Mons"),
    ("timezone", ""),
    ("timezone", " UTC"),
    ("timezone", "../../etc/passwd"),
    ("timezone", "/usr/share/zoneinfo/UTC"),
    ("warmup_days", 0),
    ("warmup_first_day_cap", 0),
    ("warmup_first_day_cap", 681),
    ("quiet_start_hour", 24),
    ("quiet_end_hour", -1),
    ("typing_chars_per_second", 0.0),
    ("typing_chars_per_second", math.nan),
    ("typing_max_seconds", -1.0),
    ("typing_max_seconds", math.inf),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_a_bad_value_is_named(field: str, value: object) -> None:
    violations = replace(DEFAULT_POLICY, **{field: value}).violations()
    assert field in {name for name, _ in violations}
    assert all(name in FIELDS and text for name, text in violations)


def test_jitter_max_below_jitter_min_is_named() -> None:
    policy = replace(DEFAULT_POLICY, jitter_min_seconds=10.0, jitter_max_seconds=5.0)
    assert [name for name, _ in policy.violations()] == ["jitter_max_seconds"]


@pytest.mark.parametrize(("start", "end"), [(22, None), (None, 7)])
def test_quiet_hours_are_set_together(start: int | None, end: int | None) -> None:
    policy = replace(DEFAULT_POLICY, quiet_start_hour=start, quiet_end_hour=end)
    assert len(policy.violations()) == 1


def test_an_empty_quiet_window_is_refused_and_none_is_fine() -> None:
    same = replace(DEFAULT_POLICY, quiet_start_hour=5, quiet_end_hour=5)
    assert [name for name, _ in same.violations()] == ["quiet_end_hour"]
    none = replace(DEFAULT_POLICY, quiet_start_hour=None, quiet_end_hour=None)
    assert none.violations() == []


def test_zero_new_contacts_means_known_contacts_only_and_is_valid() -> None:
    assert replace(DEFAULT_POLICY, new_contacts_per_day=0).violations() == []


def test_every_violation_of_a_bad_policy_is_reported_at_once() -> None:
    policy = replace(DEFAULT_POLICY, per_minute=0, per_hour=0, timezone="nowhere")
    assert {name for name, _ in policy.violations()} == {"per_minute", "per_hour", "timezone"}
