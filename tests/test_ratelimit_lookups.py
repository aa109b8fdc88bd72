"""Number-lookup budgets in virtual time: rolling minute and day windows, refunds."""

from __future__ import annotations

from dataclasses import replace

from zapgate.ratelimit.lookups import DAY, MINUTE, Grant, LookupBudget
from zapgate.ratelimit.policy import DEFAULT_POLICY

POLICY = replace(DEFAULT_POLICY, number_checks_per_minute=10, number_checks_per_day=25)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_minute_cap_grants_part_of_a_request_and_says_when_to_retry() -> None:
    clock = Clock()
    budget = LookupBudget(clock)
    assert budget.take("a", 4, POLICY) == Grant(4, 0.0)
    clock.now += 20
    partial = budget.take("a", 8, POLICY)
    assert partial.granted == 6
    assert partial.retry_after == MINUTE - 20  # when the first 4 leave the minute
    clock.now += partial.retry_after
    assert budget.take("a", 4, POLICY) == Grant(4, 0.0)
    assert budget.take("b", 10, POLICY) == Grant(10, 0.0)  # instances are independent


def test_the_day_cap_holds_across_minutes() -> None:
    clock = Clock()
    budget = LookupBudget(clock)
    granted = 0
    for _ in range(10):
        granted += budget.take("a", 10, POLICY).granted
        clock.now += MINUTE
    assert granted == 25
    refused = budget.take("a", 1, POLICY)
    assert refused.granted == 0
    assert 0 < refused.retry_after <= DAY
    clock.now += refused.retry_after
    assert budget.take("a", 1, POLICY).granted == 1


def test_a_refund_gives_the_lookups_back() -> None:
    budget = LookupBudget(Clock())
    grant = budget.take("a", 10, POLICY)
    assert budget.take("a", 1, POLICY).granted == 0
    budget.refund("a", Grant(1, 0.0))  # not the last grant: nothing happens
    assert budget.take("a", 1, POLICY).granted == 0
    budget.refund("a", grant)
    assert budget.take("a", 10, POLICY).granted == 10
