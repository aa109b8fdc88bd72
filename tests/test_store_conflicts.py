"""PostgreSQL deadlocks and serialization failures (SQLSTATE 40P01, 40001), made for real
between two sessions: a transaction of the gateway that PostgreSQL aborts runs again and
commits once; one that keeps conflicting answers UNAVAILABLE with a retry hint, never
INTERNAL."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.postgres import create_database
from zapgate.gateway.rpc.errors import from_busy_store
from zapgate.gateway.store.conflicts import conflict_of, retry_conflicts
from zapgate.gateway.store.db import create_engine

pytestmark = pytest.mark.postgres

HANG_GUARD = 60.0  # only against hangs: nothing here asserts a duration
_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(
        postgres_admin_url, f"zapgate_conflicts_{os.getpid()}_{next(_databases)}"
    )


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE pair (id int PRIMARY KEY, v int NOT NULL)"))
        await conn.execute(sa.text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
    yield engine
    await engine.dispose()


class Rival:
    """Another session that locks row 2, waits until the gateway's transaction holds row 1,
    then wants row 1: a deadlock. It waits long before looking for one, so PostgreSQL's
    detector fires in the gateway's session, which is the one aborted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.gateway_holds_row_1 = asyncio.Event()
        self.holds_row_2 = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("SET deadlock_timeout = '30s'")
            async with conn.transaction():
                await conn.execute("UPDATE pair SET v = v + 10 WHERE id = 2")
                self.holds_row_2.set()
                await self.gateway_holds_row_1.wait()
                await conn.execute("UPDATE pair SET v = v + 10 WHERE id = 1")
        finally:
            await conn.close()


async def test_a_deadlocked_transaction_runs_again_and_commits_once(
    engine: AsyncEngine, postgres_url: str
) -> None:
    rival = Rival(postgres_url)
    attempts = 0

    async def transaction() -> None:
        nonlocal attempts
        attempts += 1
        async with engine.begin() as conn:
            await conn.execute(sa.text("SET LOCAL deadlock_timeout = '50ms'"))
            await conn.execute(sa.text("UPDATE pair SET v = v + 1 WHERE id = 1"))
            rival.gateway_holds_row_1.set()
            await conn.execute(sa.text("UPDATE pair SET v = v + 1 WHERE id = 2"))

    async with asyncio.timeout(HANG_GUARD):
        rivalling = asyncio.create_task(rival.run())
        await rival.holds_row_2.wait()
        await retry_conflicts(transaction, rng=random.Random(1))
        await rivalling
    assert attempts == 2  # aborted once (deadlock), then committed
    async with engine.connect() as conn:
        rows = dict((await conn.execute(sa.text("SELECT id, v FROM pair"))).all())
    assert rows == {1: 11, 2: 11}  # the rival's +10 and the gateway's +1 once each


async def test_a_conflict_that_persists_is_unavailable_with_a_retry_hint(
    engine: AsyncEngine, postgres_url: str
) -> None:
    rival = Rival(postgres_url)

    async def transaction() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text("SET LOCAL deadlock_timeout = '50ms'"))
            await conn.execute(sa.text("UPDATE pair SET v = v + 1 WHERE id = 1"))
            rival.gateway_holds_row_1.set()
            await conn.execute(sa.text("UPDATE pair SET v = v + 1 WHERE id = 2"))

    async with asyncio.timeout(HANG_GUARD):
        rivalling = asyncio.create_task(rival.run())
        await rival.holds_row_2.wait()
        with pytest.raises(sqlalchemy.exc.DBAPIError) as aborted:
            await retry_conflicts(transaction, attempts=1)
        await rivalling
    assert conflict_of(aborted.value) == "40P01"
    answer = from_busy_store(aborted.value)
    assert answer is not None
    assert answer.code == grpc.StatusCode.UNAVAILABLE
    assert "deadlock detected" in answer.message
    assert "retry" in answer.message
    assert answer.metadata["sqlstate"] == "40P01"


async def test_a_serialization_failure_is_a_conflict_too(engine: AsyncEngine) -> None:
    """Two SERIALIZABLE transactions that each read what the other writes: the second to
    commit fails with 40001."""
    first, second = engine.connect(), engine.connect()
    async with first as a, second as b:
        for conn in (a, b):
            await conn.execute(sa.text("BEGIN ISOLATION LEVEL SERIALIZABLE"))
        await a.execute(sa.text("SELECT sum(v) FROM pair"))
        await b.execute(sa.text("SELECT sum(v) FROM pair"))
        await a.execute(sa.text("UPDATE pair SET v = 1 WHERE id = 1"))
        await b.execute(sa.text("UPDATE pair SET v = 1 WHERE id = 2"))
        await a.execute(sa.text("COMMIT"))
        with pytest.raises(sqlalchemy.exc.DBAPIError) as failed:
            await b.execute(sa.text("COMMIT"))
        await b.rollback()
    assert conflict_of(failed.value) == "40001"
    answer = from_busy_store(failed.value)
    assert answer is not None
    assert answer.code == grpc.StatusCode.UNAVAILABLE
    assert "serialization failure" in answer.message


async def test_other_errors_are_not_retried(engine: AsyncEngine) -> None:
    attempts = 0

    async def duplicate() -> None:
        nonlocal attempts
        attempts += 1
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO pair VALUES (1, 0)"))

    with pytest.raises(sqlalchemy.exc.IntegrityError) as refused:
        await retry_conflicts(duplicate)
    assert attempts == 1
    assert conflict_of(refused.value) is None
    assert from_busy_store(refused.value) is None
