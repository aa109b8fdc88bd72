"""A node's reaction to what happens to its leases, on PostgreSQL: a won lease whose adoption
fails is given up (so the next look, here or elsewhere, takes the instance over instead of a
lease renewed forever with nothing behind it), and a draining node counts in no fair share
(the others do not hand instances around while it drains into them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import _database_numbers
from tests.postgres import create_database
from zapgate.gateway.cluster.node import ClusterNode
from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.placement import drain, live_within, rebalance
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository

pytestmark = pytest.mark.postgres

TTL = 30.0  # leases never expire by themselves during a test
SHOP: InstanceKey = ("acme", "shop")


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_node_changes_{next(_database_numbers)}")


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(postgres_url)
    instances = InstanceRepository(engine)
    for n in range(8):
        await instances.create(InstanceRecord("acme", f"i{n}", f"i{n}", "", 1))
    await instances.create(InstanceRecord("acme", "shop", "shop", "", 1))
    await instances.update("acme", "shop", {"want_connected": True})
    yield engine
    await engine.dispose()


class FailingDispatcher:
    """Stands for the dispatcher: its first adoption fails the way a store error would
    (the part under test is what the node does then)."""

    def __init__(self) -> None:
        self.adopted: list[InstanceKey] = []
        self.released: list[InstanceKey] = []
        self.failures = 1

    async def adopt(self, tenant: str, instance_id: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the store went away while adopting")
        self.adopted.append((tenant, instance_id))

    def release(self, tenant: str, instance_id: str) -> None:
        self.released.append((tenant, instance_id))


class Supervisor:
    def __init__(self) -> None:
        self.adopted: list[InstanceKey] = []
        self.released: list[InstanceKey] = []

    async def adopt(self, tenant: str, instance_id: str) -> None:
        self.adopted.append((tenant, instance_id))

    async def release(self, tenant: str, instance_id: str) -> None:
        self.released.append((tenant, instance_id))


async def until(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and await _truthy(condition()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def _truthy(value: object) -> bool:
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


async def test_a_lease_whose_adoption_failed_is_released_and_taken_over_again(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "h:1", 100)
    await leases.register("n2", "h:2", 100)
    ownership = Ownership(leases, "n1", TTL)
    dispatcher, supervisor = FailingDispatcher(), Supervisor()
    node = ClusterNode(
        ClusterSettings(node_id="n1", lease_ttl_seconds=TTL),
        leases,
        ownership,
        supervisor,  # type: ignore[arg-type]
        dispatcher,  # type: ignore[arg-type]
        lambda _channel, _on_notice: None,  # not listening: not under test here
    )
    applying = asyncio.gather(  # the node's loops that apply ownership changes
        node._sort_changes(), node._apply_adoptions(), node._apply_releases()
    )
    try:
        assert await ownership.acquire(SHOP)
        await until(lambda: SHOP not in ownership, "n1 gives the instance up")
        await until(lambda: _free(leases), "its lease is released")
        assert supervisor.adopted == []  # never connected here...
        assert supervisor.released == [SHOP] == dispatcher.released  # ...and let go

        # Free again: the next look (of any node) takes it over, at a higher epoch.
        other = Ownership(leases, "n2", TTL)
        assert SHOP in await leases.claimable(limit=10)
        assert await other.acquire(SHOP)
        owner = await leases.owner_of(*SHOP)
        assert owner is not None
        assert (owner.node_id, owner.epoch) == ("n2", 2)
        assert SHOP not in await leases.claimable(limit=10)
    finally:
        applying.cancel()


async def _free(leases: LeaseRepository) -> bool:
    return await leases.owner_of(*SHOP) is None


async def test_a_draining_node_is_no_target_and_counts_in_no_fair_share(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    for node in ("busy", "leaving", "new"):
        await leases.register(node, f"{node}:1", 100)
    for n in range(4):
        assert await leases.acquire("acme", f"i{n}", "busy", TTL) is not None
        assert await leases.acquire("acme", f"i{n + 4}", "leaving", TTL) is not None
    await leases.retire("leaving")  # SIGTERM: it drains

    loads = await leases.loads(live_within(TTL))
    by_id = {load.node_id: load for load in loads}
    assert by_id["leaving"].max_instances == 0
    # 8 instances over the 2 nodes that take any: 4 each, so the busy node keeps its 4
    # (counting the draining node, the share would be 3 and it would hand one to `new`
    # while `leaving` drains into `new` too).
    assert rebalance(loads, "busy", 4, batch=10) == []
    # The draining node's instances go to the others, least loaded first, never to itself.
    targets = [t.node_id for t in drain(loads, "leaving", 4)]
    assert targets == ["new", "new", "new", "new"]
    # And no new instance is placed on it, nor is it a hand-over target of anyone.
    assert all(t.node_id != "leaving" for t in rebalance(loads, "new", 0, batch=10))
