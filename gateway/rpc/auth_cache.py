"""A short-lived cache of successful API-key checks, so a busy client does not cost a state
store query per call. A revoked key stops working within `ttl_seconds` (1 s by default);
unknown keys are never cached, so nothing can be learned by hammering with guesses.
Concurrent calls with the same key share one check: when an entry expires under load, its
64 callers in flight make one query, not 64.

A key's role and scope are fixed when it is created (gateway/store/apikeys.py), so a cached
entry can only go stale one way: revocation. The TTL bounds that for keys revoked from
another process (the CLI, another node); a revocation made through this gateway's KeyService
also drops the key's entry at once (`forget`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from zapgate.gateway.rpc.roles import Caller

Authenticate = Callable[[str], Awaitable[Caller | None]]
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
        self._cache: dict[str, tuple[Caller, float]] = {}
        self._checking: dict[str, asyncio.Future[Caller | None]] = {}
        # Bumped by `forget`: a check that was in flight meanwhile may have read the key
        # before its revocation, so its answer is not cached.
        self._generation = 0

    async def __call__(self, key: str) -> Caller | None:
        now = self._monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        checking = self._checking.get(key)
        if checking is None:
            checking = self._checking[key] = asyncio.ensure_future(self._check(key, now))
        # Shielded: a caller that gives up does not cancel the check the others wait for.
        return await asyncio.shield(checking)

    def forget(self, key_id: str) -> None:
        """Drops the cached check of key `key_id` (just revoked here)."""
        self._generation += 1
        for key, (caller, _) in list(self._cache.items()):
            if caller.key_id == key_id:
                del self._cache[key]

    async def _check(self, key: str, now: float) -> Caller | None:
        generation = self._generation
        try:
            caller = await self._authenticate(key)
        finally:
            self._checking.pop(key, None)
        if caller is None:
            self._cache.pop(key, None)
            return None
        if generation != self._generation:
            return caller  # answered for this call only
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = (caller, now + self._ttl)
        return caller
