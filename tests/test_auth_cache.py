"""The short-lived cache of successful API-key checks."""

from __future__ import annotations

from tests.test_store import FakeClock
from zapgate.gateway.auth_cache import CachedAuthenticator


class Keys:
    def __init__(self) -> None:
        self.valid = {"good": "acme"}
        self.lookups = 0

    async def __call__(self, key: str) -> str | None:
        self.lookups += 1
        return self.valid.get(key)


async def test_hits_are_cached_until_the_ttl_and_revocation_then_applies() -> None:
    keys, clock = Keys(), FakeClock()
    cached = CachedAuthenticator(keys, ttl_seconds=1.0, monotonic=lambda: clock.now / 1e6)
    assert await cached("good") == "acme"
    assert await cached("good") == "acme"
    assert keys.lookups == 1
    del keys.valid["good"]  # revoked
    clock.now += 2_000_000  # past the TTL
    assert await cached("good") is None
    assert keys.lookups == 2


async def test_unknown_keys_are_never_cached() -> None:
    keys = Keys()
    cached = CachedAuthenticator(keys)
    for _ in range(3):
        assert await cached("guess") is None
    assert keys.lookups == 3
