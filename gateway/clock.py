"""Wall-clock time as integer microseconds, injectable so tests control it."""

from __future__ import annotations

import time
from collections.abc import Callable

MicrosClock = Callable[[], int]


def system_micros() -> int:
    return time.time_ns() // 1000
