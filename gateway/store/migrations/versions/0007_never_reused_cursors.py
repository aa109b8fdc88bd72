"""Event cursors and message seqs are never issued twice (SQLite).

SQLite numbers a new row one above the largest rowid left in its table, so once the rows at
the top are deleted their numbers come back: after retention empties `events` the next event
was cursor 1 again, and a client resuming from its stored cursor waited forever without an
OUT_OF_RANGE; deleting the instance with the newest messages handed their seqs (ListMessages
page tokens, enqueue order) to the next messages. AUTOINCREMENT makes SQLite keep the largest
number it ever issued (in `sqlite_sequence`) and never go below it. Both tables are rebuilt
with it; PostgreSQL's sequences never go back, so there is nothing to do there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (table, its number column)
TABLES = (("events", "cursor"), ("messages", "seq"))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, column in TABLES:
        top = bind.scalar(sa.text(f'SELECT max("{column}") FROM {table}'))  # noqa: S608
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass  # rebuilt as it is plus AUTOINCREMENT; rows and indexes are copied
        _seed(table, _last_issued(table, top))


def _last_issued(table: str, top: int | None) -> int:
    """The largest number issued so far, or a number above it. While rows remain, the top one
    is the largest issued (only deleting the top rows lets SQLite reuse numbers, and retention
    deletes the oldest events first). An empty `events` table has forgotten its cursors, and
    clients still hold some: the clock in microseconds is above any of them (no database
    appended an event per microsecond since 1970), so they get OUT_OF_RANGE, not silence."""
    if top is not None:
        return int(top)
    return time.time_ns() // 1000 if table == "events" else 0


def _seed(table: str, last: int) -> None:
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
    bind.execute(
        sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :seq)"),
        {"t": table, "seq": last},
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, _ in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
