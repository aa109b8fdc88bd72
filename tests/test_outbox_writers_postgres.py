"""The PostgreSQL outbox writer (one statement per batch on a connection of its own): the seqs
it returns are the rows' real seqs and the events' cursors follow the rows, drawn only under
the event-order lock; a batch commits
whole or not at all, when a message or an event breaks a constraint and when the process
writing it is killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.outbox_rows import event_row, message_row
from tests.postgres import create_database
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.event_append import EVENT_ORDER_LOCK
from zapgate.gateway.store.outbox_writers import (
    INTEGRITY_ERRORS,
    PostgresWriter,
    SqlAlchemyWriter,
    outbox_writer,
)
from zapgate.gateway.store.schema import events, messages

pytestmark = pytest.mark.postgres

_numbers = iter(range(1_000_000))


@pytest.fixture
def url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_writer_{os.getpid()}_{next(_numbers)}")


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(url)
    yield engine
    await engine.dispose()


async def stored(engine: AsyncEngine) -> tuple[dict[str, int], list[tuple[int, bytes]]]:
    """Each message's seq by id, and the events as (cursor, payload) in cursor order."""
    async with engine.connect() as conn:
        seqs = {row.id: row.seq for row in await conn.execute(sa.select(messages))}
        logged = await conn.execute(
            sa.select(events.c.cursor, events.c.payload).order_by(events.c.cursor)
        )
        return seqs, [(row.cursor, bytes(row.payload)) for row in logged]


async def test_seqs_and_cursors_follow_the_rows_between_other_writers(
    engine: AsyncEngine,
) -> None:
    writer = outbox_writer(engine)
    assert isinstance(writer, PostgresWriter)
    other = SqlAlchemyWriter(engine)  # another connection, writing in between
    first = [message_row(n) | {"id": f"first-{n}"} for n in range(300)]
    second = [message_row(n) | {"id": f"second-{n}"} for n in range(7)]
    try:
        seqs_first = await writer.write(first, [(events, [event_row(n) for n in range(300)])])
        await other.write([message_row(0) | {"id": "other"}], [(events, [event_row(999)])])
        seqs_second = await writer.write(second, [(events, [event_row(n) for n in range(7)])])
    finally:
        writer.close()

    seq_of, logged = await stored(engine)
    assert seqs_first == [seq_of[row["id"]] for row in first]
    assert seqs_second == [seq_of[row["id"]] for row in second]
    assert seqs_first == sorted(seqs_first)
    assert seqs_second == sorted(seqs_second)
    assert seqs_first[-1] < seq_of["other"] < seqs_second[0]
    expected = [event_row(n)["payload"] for n in range(300)] + [b"e999"]
    expected += [event_row(n)["payload"] for n in range(7)]
    assert [payload for _, payload in logged] == expected  # cursors in the rows' order


async def test_columns_keep_their_values_and_limits(engine: AsyncEngine) -> None:
    writer = outbox_writer(engine)
    row = message_row(1) | {"content": {"text": "Olá", "n": [1, None]}, "expire_us": 5}
    try:
        await writer.write([row], [])
        # Too long for the column: refused, as any INSERT would, never cut short.
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await writer.write([message_row(2) | {"kind": "x" * 21}], [])
    finally:
        writer.close()
    async with engine.connect() as conn:
        read = (await conn.execute(sa.select(messages))).mappings().one()
    assert {name: read[name] for name in row} == row


@pytest.mark.parametrize("broken", ["message", "event"])
async def test_a_failed_batch_leaves_no_row_and_no_event(engine: AsyncEngine, broken: str) -> None:
    writer = outbox_writer(engine)
    try:
        await writer.write([message_row(1)], [(events, [event_row(1)])])
        rows = [message_row(2), message_row(3)]
        logged = [event_row(2), event_row(3)]
        if broken == "message":
            rows.append(message_row(1))  # msg-1 exists: ids are unique
        else:
            logged.append(event_row(4) | {"payload": None})  # payload is NOT NULL
        with pytest.raises(INTEGRITY_ERRORS):
            await writer.write(rows, [(events, logged)])
        await writer.write([message_row(5)], [(events, [event_row(5)])])  # it goes on
    finally:
        writer.close()
    seq_of, stored_events = await stored(engine)
    assert sorted(seq_of) == ["msg-1", "msg-5"]
    assert [payload for _, payload in stored_events] == [b"e1", b"e5"]


async def test_a_closed_connection_is_opened_again(engine: AsyncEngine, url: str) -> None:
    writer = outbox_writer(engine)
    try:
        await writer.write([message_row(1)], [])
        admin = await asyncpg.connect(url)
        try:  # what a server restart or an idle timeout does to the writer's session
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        await engine.dispose()  # the engine's pooled sessions were ended too
        for _ in range(500):  # the writer notices the closed socket on its own
            if writer._connection is None or writer._connection.is_closed():
                break
            await asyncio.sleep(0.01)
        await writer.write([message_row(2)], [])
    finally:
        writer.close()
    seq_of, _ = await stored(engine)
    assert sorted(seq_of) == ["msg-1", "msg-2"]


async def test_a_writer_killed_mid_batch_commits_whole_batches_only(
    engine: AsyncEngine, url: str
) -> None:
    batch = 400
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.outbox_batches",
        url,
        str(batch),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None
    for n in range(3):  # three batches committed; the fourth one is on its way
        assert await process.stdout.readline() == f"batch {n}\n".encode()
    process.kill()
    await process.wait()

    admin = await asyncpg.connect(url)
    try:
        for _ in range(3000):  # until the server has finished with the killed session
            others = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend' AND state <> 'idle'"
            )
            if others == 0:
                break
            await asyncio.sleep(0.01)
        # One statement, one snapshot: messages and events seen at the same moment.
        ids, named = await admin.fetchrow(
            "SELECT array(SELECT id FROM messages ORDER BY id),"
            " array(SELECT convert_from(payload, 'UTF8') FROM events ORDER BY 1)"
        )
    finally:
        await admin.close()
    assert len(ids) % batch == 0
    assert len(ids) >= 3 * batch
    assert ids == named  # each message with its event, no event without its message


async def test_events_draw_their_cursors_only_under_the_event_order_lock(
    engine: AsyncEngine, url: str
) -> None:
    """Another transaction holds the lock: the writer waits for it before any cursor is
    drawn, so the holder's event, drawn and committed first, gets the smaller cursor."""
    holder = await asyncpg.connect(url)
    writer = outbox_writer(engine)
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", EVENT_ORDER_LOCK)
        write = asyncio.create_task(
            writer.write([message_row(1)], [(events, [event_row(n) for n in range(3)])])
        )
        for _ in range(3000):  # until the writer's session waits for that lock
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting == 1
        assert not write.done()
        await holder.execute(
            "INSERT INTO events (tenant, instance_id, type, payload, time_us)"
            " VALUES ('acme', 'shop', 3, 'holder', 0)"
        )
        await holding.commit()
        await write
    finally:
        writer.close()
        await holder.close()
    _, logged = await stored(engine)
    assert [payload for _, payload in logged] == [b"holder", b"e0", b"e1", b"e2"]
