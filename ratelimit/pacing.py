"""Pacing for calls that are not messages (read receipts, chat presences): a token bucket
per key, so a runaway caller cannot flood WhatsApp with them. Pure and clock-injected."""

from __future__ import annotations

from collections.abc import Callable


class Pacer:
    """Allows `burst` calls at once per key, refilled at `per_second`."""

    def __init__(self, clock: Callable[[], float], per_second: float, burst: int) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be > 0 and burst >= 1")
        self._clock = clock
        self._rate = per_second
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of)

    def take(self, key: str) -> float:
        """0.0 when the call may go now (it is counted); otherwise the seconds until it
        may (nothing is counted)."""
        now = self._clock()
        tokens, since = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - since) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)
