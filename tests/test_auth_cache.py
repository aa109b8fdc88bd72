"""The short-lived cache of successful API-key checks."""

from __future__ import annotations

import asyncio

from tests.test_store import FakeClock
from zapgate.gateway.rpc.auth_cache import CachedAuthenticator
from zapgate.gateway.rpc.roles import Caller, Role

ACME = Caller("acme", "k1", Role.SENDER, ("shop",))


class Keys:
    def __init__(self) -> None:
        self.valid = {"good": ACME}
        self.lookups = 0
        self.answer = asyncio.Event()  # lookups wait for it
        self.answer.set()

    async def __call__(self, key: str) -> Caller | None:
        self.lookups += 1
        await self.answer.wait()
        if key == "broken":
            raise ConnectionError("state store unreachable")
        return self.valid.get(key)


async def test_hits_are_cached_until_the_ttl_and_revocation_then_applies() -> None:
    keys, clock = Keys(), FakeClock()
    cached = CachedAuthenticator(keys, ttl_seconds=1.0, monotonic=lambda: clock.now / 1e6)
    assert await cached("good") == ACME
    assert await cached("good") == ACME
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


async def test_concurrent_misses_share_one_lookup() -> None:
    keys, clock = Keys(), FakeClock()
    cached = CachedAuthenticator(keys, ttl_seconds=1.0, monotonic=lambda: clock.now / 1e6)
    keys.answer.clear()
    callers = [asyncio.ensure_future(cached("good")) for _ in range(64)]
    await asyncio.sleep(0)
    callers[0].cancel()  # one caller giving up does not cancel the others' check
    keys.answer.set()
    results = await asyncio.gather(*callers[1:])
    assert results == [ACME] * 63
    assert keys.lookups == 1
    clock.now += 2_000_000  # expired: the next burst checks once again
    assert await asyncio.gather(cached("good"), cached("good")) == [ACME, ACME]
    assert keys.lookups == 2


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_kept() -> None:
    keys = Keys()
    cached = CachedAuthenticator(keys)
    results = await asyncio.gather(cached("broken"), cached("broken"), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert keys.lookups == 1
    await asyncio.gather(cached("broken"), return_exceptions=True)
    assert keys.lookups == 2


async def test_forget_drops_a_revoked_key_before_its_ttl() -> None:
    keys, clock = Keys(), FakeClock()
    cached = CachedAuthenticator(keys, ttl_seconds=60.0, monotonic=lambda: clock.now / 1e6)
    keys.valid["other"] = Caller("acme", "k2", Role.VIEWER)
    assert await cached("good") == ACME
    assert await cached("other") == keys.valid["other"]
    del keys.valid["good"]  # revoked through this gateway's KeyService
    cached.forget("k1")
    assert await cached("good") is None  # not 60 s later: at once
    assert await cached("other") is not None
    assert keys.lookups == 3  # the other key's entry was kept


async def test_a_check_in_flight_when_a_key_is_forgotten_is_not_cached() -> None:
    valid, answer, lookups = {"good": ACME}, asyncio.Event(), []

    async def read_then_wait(key: str) -> Caller | None:
        found = valid.get(key)  # read before the revocation...
        lookups.append(key)
        await answer.wait()
        return found

    cached = CachedAuthenticator(read_then_wait, ttl_seconds=60.0)
    in_flight = asyncio.ensure_future(cached("good"))
    while not lookups:  # the check has read the key
        await asyncio.sleep(0)
    del valid["good"]
    cached.forget("k1")  # ...which lands while the check waits
    answer.set()
    assert await in_flight == ACME  # what it read, for that call; but not kept
    assert await cached("good") is None
    assert len(lookups) == 2
