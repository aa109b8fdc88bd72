"""Group caps in virtual time: creations per rolling day, adds per rolling hour and day,
partial grants with the time until room, refunds of adds never made, what is left."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zapgate.ratelimit.groups import DAY, HOUR, Grant, GroupPacer, GroupRoom
from zapgate.ratelimit.policy import DEFAULT_POLICY

POLICY = replace(
    DEFAULT_POLICY,
    groups_created_per_day=2,
    participants_added_per_hour=5,
    participants_added_per_day=8,
)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_creations_are_capped_per_rolling_day() -> None:
    clock = Clock()
    pacer = GroupPacer(clock)
    assert pacer.take_creation("a", POLICY) == Grant(1, 0.0)
    clock.now += 600
    assert pacer.take_creation("a", POLICY) == Grant(1, 0.0)
    clock.now += 600
    assert pacer.take_creation("a", POLICY) == Grant(0, DAY - 1200)
    assert pacer.take_creation("b", POLICY) == Grant(1, 0.0)  # per instance
    clock.now += DAY - 1200
    assert pacer.take_creation("a", POLICY) == Grant(1, 0.0)


def test_adds_are_granted_in_part_under_the_hour_and_the_day() -> None:
    clock = Clock()
    pacer = GroupPacer(clock)
    assert pacer.take_adds("a", 3, POLICY) == Grant(3, 0.0)
    clock.now += 100
    partial = pacer.take_adds("a", 4, POLICY)
    assert partial == Grant(2, HOUR - 100)  # when the first 3 leave the hour
    clock.now += partial.retry_after
    # The hour has room again; the day (8) has 3 left.
    assert pacer.take_adds("a", 5, POLICY) == Grant(3, DAY - HOUR)
    assert pacer.room("a", POLICY) == GroupRoom(creations_day=2, adds_hour=0, adds_day=0)


def test_refunds_give_back_adds_never_made() -> None:
    clock = Clock()
    pacer = GroupPacer(clock)
    assert pacer.take_adds("a", 5, POLICY).granted == 5
    pacer.refund_adds("a", 2)  # two were already in the group
    assert pacer.room("a", POLICY).adds_hour == 2
    pacer.take_creation("a", POLICY)
    pacer.refund_creation("a")  # the engine failed: nothing was created
    assert pacer.room("a", POLICY).creations_day == 2
    pacer.refund_adds("a", 3)
    assert pacer.room("a", POLICY).adds_hour == 5


@pytest.mark.parametrize(
    "field", ["groups_created_per_day", "participants_added_per_hour", "participants_added_per_day"]
)
def test_a_group_cap_below_one_is_refused(field: str) -> None:
    assert (field, "must be >= 1 (use a large number for no practical cap)") in replace(
        DEFAULT_POLICY, **{field: 0}
    ).violations()


def test_the_default_group_caps() -> None:
    assert (
        DEFAULT_POLICY.groups_created_per_day,
        DEFAULT_POLICY.participants_added_per_hour,
        DEFAULT_POLICY.participants_added_per_day,
    ) == (3, 20, 50)
    assert DEFAULT_POLICY.violations() == []
