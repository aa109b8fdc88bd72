"""A node listens to PostgreSQL on one connection: other nodes' events and the hand-over
notices addressed to it arrive on the same one, which the supervision brings back after
the server drops it, for both channels at once."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from tests.cluster_nodes import Cluster, until
from tests.postgres import create_database
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.wakeups import APPLICATION_NAME, CrossNodeWakeups
from zapgate.gateway.store import handover_notices
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.leases import LeaseRepository
from zapgate.gateway.supervision import Supervision
from zapgate.v1 import event_pb2 as pb

pytestmark = pytest.mark.postgres

HANG_GUARD = 30.0  # only against hangs: nothing here asserts a duration
TTL = 30.0
_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_listener_{os.getpid()}_{next(_databases)}")


async def eventually(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


async def test_events_and_hand_over_notices_share_one_connection_that_comes_back(
    postgres_url: str,
) -> None:
    engine = await open_database(postgres_url)
    other_engine = create_engine(postgres_url)  # another node's writes
    here, there = EventLog(engine), EventLog(other_engine)
    for name in ("a", "b"):
        await InstanceRepository(engine).create(InstanceRecord("acme", name, name, "", 1))
    leases = LeaseRepository(other_engine)
    await leases.register("n2", "h2:1", 100)
    await leases.register("n1", "h1:1", 100)
    handed = asyncio.Event()
    wakeups = CrossNodeWakeups(
        here,
        lambda: asyncpg.connect(
            postgres_url, server_settings={"application_name": f"{APPLICATION_NAME} n1"}
        ),
        check_seconds=0.2,
    )
    wakeups.on_channel(handover_notices.CHANNEL, handover_notices.for_node("n1", handed.set))
    with pytest.raises(ValueError, match="already"):
        wakeups.on_channel(handover_notices.CHANNEL, lambda _payload: None)
    supervision = Supervision(backoff_base=0.05, backoff_cap=0.2)
    supervision.start("listener", wakeups.listen)
    supervision.start("poll", wakeups.poll)

    async def listeners() -> int:
        async with engine.connect() as conn:
            count = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": f"{APPLICATION_NAME} n1"},
            )
        return int(count or 0)

    async def both_arrive(instance_id: str) -> None:
        handed.clear()
        signal = here.signal()
        await there.append("acme", instance_id, pb.SendingPaused(reason="x"))
        async with asyncio.timeout(HANG_GUARD):
            await signal.wait()
        assert await leases.acquire("acme", instance_id, "n2", TTL) == 1
        assert await leases.hand_over(("acme", instance_id), "n2", 1, "n1", TTL)
        async with asyncio.timeout(HANG_GUARD):
            await handed.wait()

    try:
        await eventually(lambda: wakeups.listening, "listening")
        assert await listeners() == 1
        await both_arrive("a")

        async with engine.connect() as conn:  # the server drops it
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": f"{APPLICATION_NAME} n1"},
            )
        await eventually(lambda: not wakeups.listening, "the loss noticed")
        await eventually(lambda: wakeups.listening, "listening again")
        assert await listeners() == 1
        await both_arrive("b")  # both channels again, on the new connection
    finally:
        await supervision.stop()
        await other_engine.dispose()
        await engine.dispose()


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, postgres_url)
    yield cluster
    cluster.close()


async def test_a_running_node_listens_on_one_connection_only(cluster: Cluster) -> None:
    cluster.start("n1")

    async def listening() -> bool:
        rows = await cluster.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name",
            name=f"{APPLICATION_NAME} n1",
        )
        return int(rows[0][0]) == 1  # type: ignore[call-overload]

    await until(listening, "n1 listens")
    # No other connection of the node waits on a LISTEN: a connection that ever ran one and
    # stays idle shows it as its last statement (the named listener moves on to its checks).
    rows = await cluster.rows(
        "SELECT application_name, query FROM pg_stat_activity "
        "WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    )
    assert all(str(row[0]).startswith(APPLICATION_NAME) for row in rows), rows
