"""A state store too busy to answer in time is UNAVAILABLE (retry), never INTERNAL: SQLite's
write lock held past the busy timeout, or a connection pool exhausted past its timeout."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import create_async_engine

from zapgate.gateway.rpc.errors import from_busy_store


def test_a_locked_sqlite_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE t (x INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock...
        writer = sqlite3.connect(path, timeout=0, isolation_level=None)
        with closing(writer), pytest.raises(sqlite3.OperationalError) as locked:
            writer.execute("INSERT INTO t VALUES (1)")  # ...past this one's timeout
    busy = from_busy_store(locked.value)
    assert busy is not None
    assert busy.code == grpc.StatusCode.UNAVAILABLE
    assert "retry" in busy.message


async def test_the_same_through_sqlalchemy_and_an_exhausted_pool(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE t (x INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{path}",
            connect_args={"timeout": 0},
            pool_size=1,
            max_overflow=0,
            pool_timeout=0.1,
        )
        try:
            with pytest.raises(sqlalchemy.exc.OperationalError) as locked:
                async with engine.begin() as conn:
                    await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            assert from_busy_store(locked.value) is not None
            async with engine.connect():  # the only connection, taken...
                with pytest.raises(sqlalchemy.exc.TimeoutError) as exhausted:
                    async with engine.connect():  # ...so the next waits past the timeout
                        pass
            assert from_busy_store(exhausted.value) is not None
        finally:
            await engine.dispose()


def test_other_errors_are_not_a_busy_store() -> None:
    assert from_busy_store(sqlite3.OperationalError("no such table: t")) is None
    assert from_busy_store(ValueError("database is locked")) is None
