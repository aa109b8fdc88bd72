"""PostgreSQL aborts a transaction that deadlocked with another (SQLSTATE 40P01) or could not
be serialized with another (40001). Nothing of it was committed, so a transaction whose body
only talks to the database may simply run again: `retry_conflicts` does, a few times with a
short random pause (the two transactions then rarely meet again). What still conflicts after
that reaches the caller, who answers UNAVAILABLE with a retry hint (rpc/errors.py)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATE -> what PostgreSQL calls it.
CONFLICTS = {"40P01": "deadlock detected", "40001": "serialization failure"}
ATTEMPTS = 4
PAUSE_SECONDS = 0.02  # times the attempt, randomized


def conflict_of(error: BaseException) -> str | None:
    """The conflict's SQLSTATE when `error` is one (raised by asyncpg, or by SQLAlchemy
    around it); None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if state in CONFLICTS:
            return str(state)
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


async def retry_conflicts(
    run: Callable[[], Awaitable[T]],
    attempts: int = ATTEMPTS,
    rng: random.Random | None = None,
) -> T:
    """Runs `run` (one whole transaction, nothing but database work in it) again when
    PostgreSQL aborted it in a conflict; other errors, and the last conflict, propagate."""
    pick = rng or random.Random()  # noqa: S311 (spreading retries, not crypto)
    for attempt in range(1, attempts + 1):
        try:
            return await run()
        except Exception as error:
            state = conflict_of(error)
            if state is None or attempt == attempts:
                raise
            log.info("transaction aborted (%s, %s): retrying", state, CONFLICTS[state])
            await asyncio.sleep(PAUSE_SECONDS * attempt * (0.5 + pick.random()))
    raise AssertionError("unreachable: the last attempt returns or raises")
