"""How a batch of new messages (and the rows committed with them, their QUEUED events) is
written in one transaction. SendMessage's throughput hangs on this, so SQLite gets a path of
its own: a dedicated thread with its own `sqlite3` connection that runs the whole batch
(BEGIN IMMEDIATE, a multi-row INSERT per table, COMMIT) in one hand-off and releases the
GIL while SQLite works. Through SQLAlchemy's async adapter the same batch costs the event
loop about three times as much CPU (statement compilation, per-row parameter processing, a
thread hop per statement).
PostgreSQL gets one too: a connection of the writer's own (asyncpg, no pool) that writes the
whole batch, the messages and their events under the event-order lock, in one statement and
one round trip (`postgres_batch.py`). SQLite databases without a file keep the SQLAlchemy
path."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.store.db import sqlite_file, tune_sqlite
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.postgres_batch import BatchStatement
from zapgate.gateway.store.schema import events, messages
from zapgate.gateway.store.worker_thread import WorkerThread

Rows = list[dict[str, Any]]
# Rows for other tables, inserted in the same transaction after the messages.
Companions = Sequence[tuple[sa.Table, Rows]]

# Raised by both writers when a row breaks a constraint (an idempotency key already used).
INTEGRITY_ERRORS = (
    sa.exc.IntegrityError,
    sqlite3.IntegrityError,
    asyncpg.IntegrityConstraintViolationError,
)
MAX_VARIABLES = 32_766  # SQLite's limit on parameters per statement (since 3.32)


class OutboxWriter(Protocol):
    async def write(self, rows: Rows, companions: Companions) -> list[int]:
        """Commits the message rows and the companion rows in one transaction; returns each
        message's seq, in the order of `rows`."""
        ...

    def close(self) -> None: ...


def outbox_writer(engine: AsyncEngine) -> OutboxWriter:
    if engine.url.get_backend_name() == "postgresql":
        return PostgresWriter(engine)
    path = sqlite_file(engine)
    return SqliteThreadWriter(path) if path is not None else SqlAlchemyWriter(engine)


async def insert_companions(conn: AsyncConnection, companions: Companions) -> None:
    """Companion rows, after the messages; rows for `events` through `append_events`, which
    orders them among every other transaction appending events (PostgreSQL)."""
    for table, rows in companions:
        if table is events:
            await append_events(conn, rows)
        else:
            await conn.execute(sa.insert(table), rows)


class SqlAlchemyWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, rows: Rows, companions: Companions) -> list[int]:
        async with self._engine.begin() as conn:
            # Matched by id, not by order: asking for RETURNING rows in parameter order
            # makes SQLAlchemy insert row by row on SQLite.
            result = await conn.execute(
                sa.insert(messages).returning(messages.c.id, messages.c.seq), rows
            )
            seq_of = {row.id: int(row.seq) for row in result}
            await insert_companions(conn, companions)
        return [seq_of[row["id"]] for row in rows]

    def close(self) -> None:
        pass


class SqliteInsert:
    """A table's INSERT in SQLite's dialect, and how to turn a row dict into its parameters
    (JSON columns serialized as SQLAlchemy's JSON type would)."""

    def __init__(self, table: sa.Table) -> None:
        columns = [c for c in table.c if not (c.primary_key and c.autoincrement is True)]
        statement = sa.insert(table).compile(
            dialect=sqlite_dialect.dialect(), column_keys=[c.name for c in columns]
        )
        self._head, _, self._values = str(statement).partition(" VALUES ")
        order = statement.positiontup or []
        json_columns = {c.name for c in columns if isinstance(c.type, sa.JSON)}
        self._fields = [(name, name in json_columns) for name in order]
        self._rows_per_statement = MAX_VARIABLES // len(order)

    def statements(self, rows: Rows) -> list[tuple[str, list[Any]]]:
        """Multi-row INSERTs with their parameters: SQLite runs each in one step, so the
        writer thread gives up the GIL once per statement rather than once per row."""
        parameters = [
            json.dumps(row[name]) if is_json else row[name]
            for row in rows
            for name, is_json in self._fields
        ]
        width, most = len(self._fields), self._rows_per_statement
        return [
            (
                self._sql(min(most, len(rows) - start)),
                parameters[start * width : (start + most) * width],
            )
            for start in range(0, len(rows), most)
        ]

    def _sql(self, rows: int) -> str:
        return f"{self._head} VALUES {', '.join([self._values] * rows)}"


class SqliteThreadWriter:
    """The SQLite path: see the module's docstring."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._thread = WorkerThread("outbox-writer", self._connect, self._disconnect)
        self._inserts: dict[str, SqliteInsert] = {}

    def _connect(self) -> None:
        # Autocommit mode: the transaction is the explicit BEGIN IMMEDIATE below.
        self._connection = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        tune_sqlite(self._connection, None)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()

    async def write(self, rows: Rows, companions: Companions) -> list[int]:
        # Parameters are built on the loop (cheap, and no dict is shared with the thread).
        statements = [
            self._insert(table).statements(table_rows)
            for table, table_rows in [(messages, rows), *companions]
        ]
        last = await self._thread.run(lambda: self._write(statements))
        # The write lock was held from BEGIN IMMEDIATE to COMMIT, so the rowids SQLite gave
        # the batch are consecutive and end at the last one.
        return list(range(last - len(rows) + 1, last + 1))

    def _insert(self, table: sa.Table) -> SqliteInsert:
        insert = self._inserts.get(table.name)
        if insert is None:
            insert = self._inserts[table.name] = SqliteInsert(table)
        return insert

    def _write(self, statements: list[list[tuple[str, list[Any]]]]) -> int:
        connection = self._connection
        assert connection is not None
        # Event rows are inserted here without `append_events`: SQLite has one writer, and
        # BEGIN IMMEDIATE takes its lock before any cursor is drawn and keeps it until COMMIT,
        # so cursors become visible in cursor order anyway.
        connection.execute("BEGIN IMMEDIATE")
        try:
            last = 0
            for sql, parameters in statements[0]:
                last = int(connection.execute(sql, parameters).lastrowid or 0)
            for sql, parameters in (s for table in statements[1:] for s in table):
                connection.execute(sql, parameters)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return last

    def close(self) -> None:
        self._thread.close()


# Options of SQLAlchemy's asyncpg dialect that asyncpg.connect does not take.
_DIALECT_ONLY_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func")


class PostgresWriter:
    """The PostgreSQL path: see the module's docstring."""

    def __init__(self, engine: AsyncEngine) -> None:
        # The engine's own connection arguments (host, port, user, database, URL options).
        args, options = engine.dialect.create_connect_args(engine.url)
        for name in _DIALECT_ONLY_OPTIONS:
            options.pop(name, None)
        self._connect_args: tuple[list[Any], dict[str, Any]] = (list(args), dict(options))
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the one connection
        self._statements: dict[tuple[str, ...], BatchStatement] = {}

    async def write(self, rows: Rows, companions: Companions) -> list[int]:
        statement = self._statement([table for table, _ in companions])
        arguments = statement.arguments([rows, *(table_rows for _, table_rows in companions)])
        async with self._lock:
            connection = await self._connected()
            returned = await connection.fetch(statement.sql, *arguments)
        seq_of = {record[0]: record[1] for record in returned}
        return [seq_of[row["id"]] for row in rows]

    def _statement(self, then: list[sa.Table]) -> BatchStatement:
        shape = tuple(table.name for table in then)
        statement = self._statements.get(shape)
        if statement is None:
            statement = BatchStatement(messages, ("id", "seq"), then)
            self._statements[shape] = statement
        return statement

    async def _connected(self) -> asyncpg.Connection:
        """The writer's connection, opened again if the server closed it (a restart, an idle
        timeout). A batch whose connection breaks in flight fails; it is not retried, since
        it may have committed."""
        if self._connection is None or self._connection.is_closed():
            args, options = self._connect_args
            self._connection = await asyncpg.connect(*args, **options)
        return self._connection

    def close(self) -> None:
        # Closing asyncpg's connection politely needs the event loop; terminate() just
        # drops the socket, which the server treats as a session's end. Every batch has been
        # answered by now (the gRPC server and the dispatcher stop first).
        if self._connection is not None:
            self._connection.terminate()
