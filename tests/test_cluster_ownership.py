"""A node's lease keeping and takeover on PostgreSQL, in virtual time: renewals keep what
is still held and give up what expired or was taken; a node that could not renew for a
whole TTL gives up everything before it asks the database; takeover goes to the least
loaded nodes, split fairly, within each node's maximum."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import _database_numbers
from tests.pg_proxy import PgProxy, through
from tests.postgres import create_database
from zapgate.gateway.cluster.ownership import Change, Ownership
from zapgate.gateway.cluster.renewal import Renewal
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.cluster.takeover import Takeover
from zapgate.gateway.rpc.errors import InstanceNotRunning, InstanceOnAnotherNode
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.gateway.store.fencing import Fenced, FenceToken
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository

pytestmark = pytest.mark.postgres

TTL = 30.0  # the database's leases never expire by themselves during a test
NAMES = [f"i{n}" for n in range(6)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_owners_{next(_database_numbers)}")


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(postgres_url)
    instances = InstanceRepository(engine)
    for name in NAMES:
        await instances.create(InstanceRecord("acme", name, name, "", 1))
        await instances.update("acme", name, {"want_connected": True})
    yield engine
    await engine.dispose()


def settings(node_id: str, max_instances: int = 100) -> ClusterSettings:
    return ClusterSettings(node_id=node_id, lease_ttl_seconds=TTL, max_instances=max_instances)


def drained(ownership: Ownership) -> list[Change]:
    changes = []
    while not ownership.changes.empty():
        changes.append(ownership.changes.get_nowait())
    return changes


async def test_renewal_keeps_held_leases_and_gives_up_lost_ones(engine: AsyncEngine) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "h:1", 100)
    ownership = Ownership(leases, "n1", TTL)
    clock = Clock()
    renewal = Renewal(settings("n1"), leases, ownership, clock)
    assert await ownership.acquire(("acme", "i0"))
    assert await ownership.acquire(("acme", "i1"))
    assert drained(ownership) == [Change(("acme", "i0"), True), Change(("acme", "i1"), True)]
    assert ownership.token("acme", "i0") == FenceToken("n1", 1)

    clock.now += TTL / 3
    await renewal.once()
    assert len(ownership) == 2
    assert drained(ownership) == []

    await leases.release("n1", [("acme", "i1")])  # as if it expired while the node slept
    assert await leases.acquire("acme", "i1", "n2", TTL) == 2  # and another node took it
    clock.now += TTL / 3
    await renewal.once()
    assert ("acme", "i1") not in ownership
    assert drained(ownership) == [Change(("acme", "i1"), False)]
    with pytest.raises(Fenced):
        ownership.token("acme", "i1")


async def test_a_node_that_could_not_renew_for_a_ttl_gives_everything_up(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "h:1", 100)
    ownership = Ownership(leases, "n1", TTL)
    clock = Clock()
    renewal = Renewal(settings("n1"), leases, ownership, clock)
    for name in NAMES[:3]:
        assert await ownership.acquire(("acme", name))
    drained(ownership)
    clock.now += TTL  # e.g. SIGSTOP: the database still shows the leases valid
    await renewal.once()
    assert len(ownership) == 0
    assert {c.key[1] for c in drained(ownership) if not c.acquired} == set(NAMES[:3])


async def test_a_node_cut_off_from_the_database_gives_everything_up_at_the_deadline(
    engine: AsyncEngine, postgres_url: str
) -> None:
    """A renewal that hangs (the database unreachable) times out when the leases may
    expire: the node gives them up then, not at its next renewal a period later, when
    another node may already have taken them over and connected them."""
    target = urlsplit(postgres_url)
    proxy = PgProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    cut_off = create_engine(through(postgres_url, proxy.port))
    try:
        leases = LeaseRepository(cut_off)
        await leases.register("n1", "h:1", 100)
        ownership = Ownership(leases, "n1", TTL)
        offset = 0.0
        renewal = Renewal(settings("n1"), leases, ownership, lambda: time.monotonic() + offset)
        for name in NAMES[:3]:
            assert await ownership.acquire(("acme", name))
        drained(ownership)
        offset = TTL - 0.5  # the last renewal was almost a TTL ago
        proxy.cut()
        await renewal.once()  # hangs until the deadline, then gives up
        assert len(ownership) == 0
        assert {c.key[1] for c in drained(ownership) if not c.acquired} == set(NAMES[:3])
    finally:
        proxy.heal()
        await cut_off.dispose()
        await proxy.close()


async def test_calls_acquire_free_instances_and_name_the_owner_of_held_ones(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "10.0.0.1:50051", 100)
    await leases.register("n2", "10.0.0.2:50051", 100)
    n1, n2 = Ownership(leases, "n1", TTL), Ownership(leases, "n2", TTL)
    with pytest.raises(InstanceNotRunning, match="served by no node"):
        await n1.ensure_owner("acme", "i0", claim=False)
    await n1.ensure_owner("acme", "i0")  # Connect: takes the free instance
    assert ("acme", "i0") in n1
    with pytest.raises(InstanceOnAnotherNode) as refused:
        await n2.ensure_owner("acme", "i0")
    assert refused.value.metadata["owner_node"] == "n1"
    assert refused.value.metadata["owner_address"] == "10.0.0.1:50051"


async def test_takeover_goes_to_the_least_loaded_nodes_within_their_maximum(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    await leases.register("busy", "h:1", 100)
    await leases.register("idle", "h:2", 100)
    await leases.register("small", "h:3", 2)
    busy = Ownership(leases, "busy", TTL)
    idle = Ownership(leases, "idle", TTL)
    small = Ownership(leases, "small", TTL)
    assert await busy.acquire(("acme", "i0"))

    # The busy node leaves the rest to less loaded ones.
    assert await Takeover(settings("busy"), leases, busy, random.Random(1)).once() == 0
    # The two idle ones split the five free instances (3 + 2); each claim is exclusive.
    taken_idle = await Takeover(settings("idle"), leases, idle, random.Random(2)).once()
    taken_small = await Takeover(
        settings("small", max_instances=2), leases, small, random.Random(3)
    ).once()
    assert taken_idle == 3
    assert taken_small == 2  # its maximum
    held = [set(node.held()) for node in (busy, idle, small)]
    assert sum(len(h) for h in held) == len(NAMES)
    assert set().union(*held) == {("acme", name) for name in NAMES}
    assert await leases.claimable(10) == []


async def test_instances_the_least_loaded_node_leaves_for_a_ttl_go_to_any_node(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    instances = InstanceRepository(engine)
    await leases.register("busy", "h:1", 100)
    await leases.register("idle", "h:2", 100)  # least loaded, but it never claims them
    busy = Ownership(leases, "busy", TTL)
    assert await busy.acquire(("acme", "i0"))
    for name in ("i1", "i2"):
        await instances.update("acme", name, {"want_connected": True})
    await leases.acquire("acme", "i1", "gone", -2 * TTL)  # orphaned for two TTLs
    await leases.acquire("acme", "i2", "gone", 0.0)  # just orphaned: idle's to take
    taken = await Takeover(settings("busy"), leases, busy, random.Random(1)).once()
    assert taken == 1
    assert ("acme", "i1") in busy
    assert ("acme", "i2") not in busy


async def test_a_node_whose_renewals_fail_takes_nothing_over(engine: AsyncEngine) -> None:
    leases = LeaseRepository(engine)
    await leases.register("cut", "h:1", 100)
    cut = Ownership(leases, "cut", TTL)
    takeover = Takeover(settings("cut"), leases, cut, random.Random(1), renewing=lambda: False)
    assert await takeover.once() == 0
    assert len(cut) == 0
    assert len(await leases.claimable(10)) == len(NAMES)


class SlowLeases(LeaseRepository):
    """Real renewals that take `delay` seconds of the virtual clock."""

    def __init__(self, engine: AsyncEngine, clock: Clock, delay: float) -> None:
        super().__init__(engine)
        self._clock = clock
        self.delay = delay

    async def renew(
        self, node_id: str, keys: Iterable[InstanceKey], ttl_seconds: float
    ) -> dict[InstanceKey, int]:
        renewed = await super().renew(node_id, keys, ttl_seconds)
        self._clock.now += self.delay
        return renewed


async def test_a_renewal_answered_past_the_deadline_is_not_trusted_and_the_node_recovers(
    engine: AsyncEngine,
) -> None:
    clock = Clock()
    leases = SlowLeases(engine, clock, delay=TTL)  # e.g. the database stalled
    await leases.register("n1", "h:1", 100)
    ownership = Ownership(leases, "n1", TTL)
    renewal = Renewal(settings("n1"), leases, ownership, clock)
    assert await ownership.acquire(("acme", "i0"))
    drained(ownership)
    await renewal.once()
    assert len(ownership) == 0
    assert drained(ownership) == [Change(("acme", "i0"), False)]

    # Renewals answer in time again: the node heartbeats and may hold instances again.
    leases.delay = 0.0
    clock.now += TTL / 3
    await renewal.once()
    await leases.release("n1")  # (the dropped lease, as the node's own release does)
    assert await ownership.acquire(("acme", "i0"))
    clock.now += TTL / 3
    await renewal.once()
    assert ownership.token("acme", "i0") == FenceToken("n1", 2)
