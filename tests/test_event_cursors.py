"""Event cursors and message seqs are never issued twice, on SQLite and PostgreSQL, even
after every row was deleted; and migration 0007 gives an existing SQLite database that."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog, Retention
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import MIGRATIONS_DIR, create_engine, open_database
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.schema import metadata
from zapgate.v1 import event_pb2 as pb

HOUR_US = 3600 * 1_000_000


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    yield engine
    await engine.dispose()


async def cursors(log: EventLog, after: int = 0) -> list[int]:
    return [event.cursor for event in await log.read("acme", after, [], [], 1000)]


async def test_cursors_grow_after_retention_empties_the_log(engine: AsyncEngine) -> None:
    clock = VirtualClock()
    log = EventLog(engine, Retention(max_age_seconds=3600), clock)
    for n in range(3):
        await log.append("acme", "shop", pb.SendingPaused(reason=f"before {n}"))
    earlier = await cursors(log)
    clock.now += 2 * HOUR_US
    assert await log.trim() == 3
    assert await cursors(log) == []
    # Every earlier cursor but the last is out of range; the last one is up to date.
    assert log.oldest == earlier[-1] + 1
    restarted = EventLog(engine, Retention(max_age_seconds=3600), clock)
    await restarted.trim()
    assert restarted.oldest == log.oldest  # known from the database, not from memory

    await log.append("acme", "shop", pb.SendingPaused(reason="after"))
    (new,) = await cursors(log)
    assert new > max(earlier)
    resumed = await log.read("acme", earlier[-1], [], [], 10)
    assert [event.sending_paused.reason for event in resumed] == ["after"]


async def test_seqs_grow_after_the_newest_messages_are_deleted(engine: AsyncEngine) -> None:
    repo = MessageRepository(engine, MessageEvents(EventLog(engine)))
    try:
        gone = [(await repo.create(message("gone", n)))[0].seq for n in range(3)]
        await repo.delete_instance("acme", "gone")
        kept, _ = await repo.create(message("kept", 0))
    finally:
        repo.close()
    assert kept.seq > max(gone)


def message(instance_id: str, n: int) -> MessageRecord:
    return MessageRecord("acme", instance_id, "5511@s.whatsapp.net", "text", {"text": str(n)})


# ---- migration 0007 on a database created before it ------------------------------------


def _upgrade(connection: sa.Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def at_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


def insert_0006_rows(path: Path, events: int, messages: int) -> None:
    """Rows as the gateway wrote them at revision 0006."""
    db = sqlite3.connect(path)
    try:
        for n in range(events):
            db.execute(
                "INSERT INTO events (tenant, instance_id, type, payload, time_us)"
                " VALUES ('acme', 'shop', 5, ?, ?)",
                (pb.Event(instance_id="shop").SerializeToString(), n),
            )
        for n in range(messages):
            db.execute(
                "INSERT INTO messages (id, tenant, instance_id, recipient_jid, kind, content,"
                " state, send_at_us, create_time_us, update_time_us)"
                " VALUES (?, 'acme', 'shop', '5511@s.whatsapp.net', 'text', '{}', 1, 0, 0, 0)",
                (f"msg-{n}",),
            )
        db.commit()
    finally:
        db.close()


def schema_diff(connection: sa.Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_migration_keeps_rows_and_continues_above_them(
    sqlite_url: str, tmp_path: Path
) -> None:
    await at_revision(sqlite_url, "0006")
    insert_0006_rows(tmp_path / "state.db", events=3, messages=2)
    engine = await open_database(sqlite_url)  # migrates to 0007 and beyond
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_diff) == []  # indexes and constraints too
        log = EventLog(engine, Retention(max_age_seconds=0), VirtualClock())
        assert await cursors(log) == [1, 2, 3]
        assert all(e.instance_id == "shop" for e in await log.read("acme", 0, [], [], 10))
        assert await log.trim() == 3
        await log.append("acme", "shop", pb.SendingPaused())
        assert await cursors(log) == [4]

        repo = MessageRepository(engine, MessageEvents(EventLog(engine)))
        try:
            assert (await repo.get("acme", "shop", "msg-1")) is not None
            await repo.delete_instance("acme", "shop")
            created, _ = await repo.create(message("shop", 0))
        finally:
            repo.close()
        assert created.seq == 3
    finally:
        await engine.dispose()


async def test_migrating_an_emptied_log_puts_every_old_cursor_out_of_range(
    sqlite_url: str, tmp_path: Path
) -> None:
    await at_revision(sqlite_url, "0006")
    insert_0006_rows(tmp_path / "state.db", events=3, messages=0)
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("DELETE FROM events")  # retention emptied the log: its cursors are forgotten
    db.commit()
    db.close()
    engine = await open_database(sqlite_url)
    try:
        log = EventLog(engine)
        await log.trim()
        assert log.oldest - 1 > 3  # a client holding cursor 3 gets OUT_OF_RANGE
        await log.append("acme", "shop", pb.SendingPaused())
        assert await cursors(log) == [log.oldest]
    finally:
        await engine.dispose()
