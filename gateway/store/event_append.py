"""The one way rows enter the `events` table inside a transaction, whoever writes them (the
event log's own appends, a message and its QUEUED event, a state change and its event).

Subscribers read the log by cursor, so events must become visible in cursor order. SQLite
has one writer at a time, so its cursors are assigned and committed in order. PostgreSQL
commits concurrent transactions in any order: a cursor taken from the sequence by one
transaction can become visible after a higher one, and a subscriber that already read past
it would never see it. So on PostgreSQL every appending transaction first takes one
transaction-scoped advisory lock, held until it commits: cursors are then drawn and made
visible in the same order, across every process that writes to the database."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.gateway.store.schema import events

# Any fixed 64-bit number; it names the lock, not a row.
EVENT_ORDER_LOCK = 0x7A61_7067_6174_6531  # "zapgate1"


async def append_events(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Inserts event rows in the caller's transaction. Call it last in the transaction, so
    the lock is held only for the commit."""
    if not rows:
        return
    await lock_event_order(conn)
    await conn.execute(sa.insert(events), rows)


async def last_issued_cursor(conn: AsyncConnection) -> int:
    """The largest cursor ever issued, rows left or not (AUTOINCREMENT keeps it in
    `sqlite_sequence`; PostgreSQL has a sequence). Under `lock_event_order` every cursor up
    to it is committed (or rolled back, never to appear)."""
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'cursor')::regclass)"
        )
    else:
        query = "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
    return int(await conn.scalar(sa.text(query)) or 0)


async def lock_event_order(conn: AsyncConnection) -> None:
    """Waits until no other transaction is appending events, and keeps them out until this
    one ends (PostgreSQL; on SQLite a writing transaction holds the only write lock anyway).
    Under it every cursor drawn so far is committed."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(EVENT_ORDER_LOCK)))
