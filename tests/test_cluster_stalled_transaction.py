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
from zapgate.gateway.rpc.errors import from_busy_store
from zapgate.gateway.store.db import create_engine
from zapgate.gateway.store.event_append import lock_event_order
from zapgate.gateway.store.leases import LeaseRepository

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


async def test_a_node_frozen_between_preparing_and_running_a_statement_frees_its_locks(
    postgres_url: str,
) -> None:
    """asyncpg prepares a statement (Parse, Describe, Flush) and runs it in a second message:
    a node frozen in between leaves its session active, waiting for the client, which the
    idle timeout does not end (the chaos test found a counter save stuck so, holding its
    lease row for minutes, and the new owner's acquisition waiting behind it). The other
    nodes end it at their next look."""
    frozen = create_engine(postgres_url, stalled_transaction_seconds=0.5)
    other = create_engine(postgres_url)
    try:
        connection = await frozen.connect()
        await connection.begin()
        await lock_event_order(connection)
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.prepare("SELECT 1")  # ...and then its node stops talking
        leases = LeaseRepository(other)
        async with asyncio.timeout(HANG_GUARD):
            while not await leases.end_stalled_sessions(0.5):  # another node's look
                await asyncio.sleep(0.1)
        async with other.begin() as writer:
            await asyncio.wait_for(lock_event_order(writer), HANG_GUARD)
        await connection.invalidate()
    finally:
        await frozen.dispose()
        await other.dispose()


async def test_a_node_s_sessions_give_up_waiting_for_a_lock(postgres_url: str) -> None:
    """A node frozen while several of its sessions waited for the event-order lock would be
    granted it by one after another, each idle until PostgreSQL ends it: every node's appends
    stalled for minutes in the chaos test. A node's session gives up waiting instead, with an
    error the call guard answers UNAVAILABLE (retry)."""
    node = create_engine(postgres_url, stalled_transaction_seconds=0.5)
    other = create_engine(postgres_url)
    try:
        async with other.begin() as holder:
            await lock_event_order(holder)  # held until the end of this block
            for _ in range(3):
                async with node.connect() as conn:
                    await conn.begin()
                    with pytest.raises(DBAPIError, match="lock timeout") as gave_up:
                        await asyncio.wait_for(lock_event_order(conn), HANG_GUARD)
                    assert from_busy_store(gave_up.value) is not None
    finally:
        await node.dispose()
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
        async with node.connect() as conn:
            assert await conn.scalar(sa.text("SHOW lock_timeout")) == "7500ms"
        async with single.connect() as conn:
            shown = await conn.scalar(sa.text("SHOW idle_in_transaction_session_timeout"))
        assert shown == "0"
    finally:
        await node.dispose()
        await single.dispose()
