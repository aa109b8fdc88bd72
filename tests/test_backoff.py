"""Reconnect backoff: exponential ceiling, full jitter, cap."""

from __future__ import annotations

import random

from zapgate.gateway.connections.backoff import Backoff


def test_ceiling_doubles_until_the_cap() -> None:
    backoff = Backoff(base_seconds=1, cap_seconds=30)
    rng = random.Random(7)
    for attempt, ceiling in enumerate([1, 2, 4, 8, 16, 30, 30, 30]):
        delays = [backoff.delay(attempt, rng) for _ in range(2000)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.95 * ceiling  # full jitter reaches the whole range
        assert min(delays) < 0.05 * ceiling


def test_jitter_spreads_instances_that_dropped_together() -> None:
    backoff = Backoff(base_seconds=1, cap_seconds=60)
    rng = random.Random(1)
    delays = sorted(backoff.delay(5, rng) for _ in range(1000))
    # Uniform over [0, 32]: each quarter of the range holds about a quarter of the retries.
    for quarter in range(4):
        inside = [d for d in delays if 8 * quarter <= d < 8 * (quarter + 1)]
        assert 200 < len(inside) < 300


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert Backoff(base_seconds=2, cap_seconds=5).delay(10_000, random.Random(0)) <= 5
