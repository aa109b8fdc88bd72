"""The SQLite outbox writer (its own thread and connection): the seqs it returns are the
rows' real seqs, even across multi-statement batches and writes from other connections."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from tests.outbox_rows import event_row, message_row
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.outbox_writers import MAX_VARIABLES, SqliteThreadWriter, outbox_writer
from zapgate.gateway.store.schema import events, messages


async def test_seqs_match_the_rows_across_statements_and_other_writers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    engine = await open_database(url)
    writer = outbox_writer(engine)
    assert isinstance(writer, SqliteThreadWriter)
    per_statement = MAX_VARIABLES // len(messages.c[1:])  # more rows than one INSERT holds
    first = [message_row(n) for n in range(per_statement + 10)]
    second = [message_row(n) for n in range(10_000, 10_005)]

    async def other_writer() -> None:  # SQLAlchemy's own connection, in between
        async with engine.begin() as conn:
            await conn.execute(sa.insert(messages), [message_row(20_000)])

    seqs_first = await writer.write(first, [(events, [event_row(n) for n in range(3)])])
    await other_writer()
    seqs_second = await writer.write(second, [])
    writer.close()
    await engine.dispose()

    with sqlite3.connect(tmp_path / "state.db") as db:
        stored = dict(db.execute("SELECT id, seq FROM messages"))
        content = db.execute("SELECT content, media FROM messages WHERE id = 'msg-1'").fetchone()
        event_count = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert seqs_first == [stored[row["id"]] for row in first]
    assert seqs_second == [stored[row["id"]] for row in second]
    assert len(set(stored.values())) == len(first) + len(second) + 1
    assert content == ('{"text": "m1", "variables": {"name": "Ana"}}', b"\x00\x01")
    assert event_count == 3


async def test_a_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    writer = outbox_writer(engine)
    await writer.write([message_row(1)], [])
    try:
        duplicate = [message_row(2), message_row(1)]  # msg-1 exists: the id is unique
        failed = await asyncio.gather(
            writer.write(duplicate, [(events, [event_row(2)])]), return_exceptions=True
        )
        assert isinstance(failed[0], sqlite3.IntegrityError)
        assert await writer.write([message_row(3)], []) != []  # the writer goes on
    finally:
        writer.close()
        await engine.dispose()
    with sqlite3.connect(tmp_path / "state.db") as db:
        ids = sorted(row[0] for row in db.execute("SELECT id FROM messages"))
        events_left = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert ids == ["msg-1", "msg-3"]
    assert events_left == 0
