"""A short-lived cache of successful API-key checks, so a busy client does not cost a state
store query per call. A revoked key stops working within `ttl_seconds` (1 s by default);
unknown keys are never cached, so nothing can be learned by hammering with guesses.
Concurrent calls with the same key share one check: when an entry expires under load, its
64 callers in flight make one query, not 64."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Authenticate = Callable[[str], Awaitable[str | None]]
MAX_ENTRIES = 10_000


class CachedAuthenticator:
    def __init__(
        self,
        authenticate: Authenticate,
        ttl_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authenticate = authenticate
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[str, float]] = {}
        self._checking: dict[str, asyncio.Future[str | None]] = {}

    async def __call__(self, key: str) -> str | None:
        now = self._monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        checking = self._checking.get(key)
        if checking is None:
            checking = self._checking[key] = asyncio.ensure_future(self._check(key, now))
        # Shielded: a caller that gives up does not cancel the check the others wait for.
        return await asyncio.shield(checking)

    async def _check(self, key: str, now: float) -> str | None:
        try:
            tenant = await self._authenticate(key)
        finally:
            self._checking.pop(key, None)
        if tenant is None:
            self._cache.pop(key, None)
            return None
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = (tenant, now + self._ttl)
        return tenant
