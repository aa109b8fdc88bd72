"""A cluster node frozen (SIGSTOP, a VM pause) or cut off from PostgreSQL inside a
transaction must not stall the other nodes behind its locks: the event-order lock is
global, so every other node's event appends, then the fenced writes holding their lease rows,
then their lease renewals would wait for it, and every node would lose every instance (the
cluster chaos test found this). PostgreSQL ends such a session after half a lease TTL."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from tests.postgres import create_database
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.gateway.store.event_append import lock_event_order
from zapgate.gateway.store.fencing import FenceToken
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.leases import LeaseRepository
from zapgate.v1 import event_pb2
from zapgate.v1 import instance_pb2 as ipb

pytestmark = pytest.mark.postgres
HANG_GUARD = 60.0  # only against hangs: without the fix the second lock never comes
_numbers = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_stall_{os.getpid()}_{next(_numbers)}")


async def test_a_node_frozen_inside_a_transaction_frees_the_event_lock(postgres_url: str) -> None:
    frozen = create_engine(postgres_url, stalled_transaction_seconds=0.5)
    other = create_engine(postgres_url)
    try:
        connection = await frozen.connect()
        await connection.begin()
        await lock_event_order(connection)  # ...and then its node stops talking
        async with other.begin() as writer:
            await asyncio.wait_for(lock_event_order(writer), HANG_GUARD)
        with pytest.raises(DBAPIError):  # the frozen node's session is gone, and its writes
            await connection.execute(sa.text("SELECT 1"))
        await connection.invalidate()
    finally:
        await frozen.dispose()
        await other.dispose()


async def test_cluster_nodes_ask_for_it_and_single_nodes_do_not(postgres_url: str) -> None:
    settings = ClusterSettings(node_id="n1", lease_ttl_seconds=15.0)
    assert settings.stalled_transaction_seconds == 7.5  # within half a TTL
    node = create_engine(postgres_url, stalled_transaction_seconds=7.5)
    single = create_engine(postgres_url)
    try:
        async with node.connect() as conn:
            shown = await conn.scalar(sa.text("SHOW idle_in_transaction_session_timeout"))
        assert shown == "7500ms"
        async with single.connect() as conn:
            shown = await conn.scalar(sa.text("SHOW idle_in_transaction_session_timeout"))
        assert shown == "0"
    finally:
        await node.dispose()
        await single.dispose()


async def test_renewals_never_wait_behind_a_fenced_write_stuck_on_the_event_lock(
    postgres_url: str,
) -> None:
    """A fenced write takes the event-order lock before its lease row: stuck behind a frozen
    appender, it holds no lease row, and the node's renewal goes through meanwhile."""
    engine = await open_database(postgres_url)
    frozen = create_engine(postgres_url)  # never ends its transaction in this test
    try:
        instances = InstanceRepository(engine)
        leases = LeaseRepository(engine)
        await instances.create(InstanceRecord("acme", "i0", "", "", ipb.INSTANCE_STATE_CONNECTED))
        epoch = await leases.acquire("acme", "i0", "n1", 60.0)
        assert epoch is not None
        appender = await frozen.connect()
        await appender.begin()
        await lock_event_order(appender)  # a node paused inside its append

        changed = event_pb2.StateChanged(state=ipb.INSTANCE_STATE_DISCONNECTED)
        write = asyncio.create_task(
            instances.update(
                "acme",
                "i0",
                {"state": ipb.INSTANCE_STATE_DISCONNECTED},
                events=[EventLog(engine).row("acme", "i0", changed)],
                fence=FenceToken("n1", epoch),
            )
        )
        await asyncio.sleep(0.5)  # the write is waiting for the event-order lock
        assert not write.done()
        renewed = await asyncio.wait_for(
            leases.renew("n1", {("acme", "i0"): epoch}, 60.0), HANG_GUARD
        )
        assert renewed == {("acme", "i0"): epoch}
        await appender.rollback()  # the frozen node is gone: the write goes through
        record = await asyncio.wait_for(write, HANG_GUARD)
        assert record.state == ipb.INSTANCE_STATE_DISCONNECTED
        await appender.close()
    finally:
        await frozen.dispose()
        await engine.dispose()
