"""Reconnect delays: exponential backoff with full jitter and a cap (AWS architecture blog,
"Exponential Backoff And Jitter"). Full jitter spreads the reconnects of many instances that
dropped together (a network blip) instead of having them retry in lockstep."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 1.0
    cap_seconds: float = 60.0
    # A connection that lasted this long was healthy: the next failure starts over.
    stable_after_seconds: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** min(attempt, 62))
        return rng.uniform(0, ceiling)
