"""How a batch of instance updates (state transitions, mostly) and their events is written
in one transaction. A restart moves every instance through two transitions within seconds,
so the batch is written with a few statements, not one per update: on SQLite in one
hand-off to a thread of its own with its own `sqlite3` connection (as the outbox does,
store/outbox_writers.py), elsewhere through SQLAlchemy with an executemany UPDATE per set
of changed columns. Each returns, per update, the instance's row as that update left it,
or None when the instance does not exist (its events are then not written)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.store.db import sqlite_file, tune_sqlite
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.outbox_writers import SqliteInsert
from zapgate.gateway.store.schema import events, instances
from zapgate.gateway.store.worker_thread import WorkerThread

Row = Mapping[str, Any] | sa.RowMapping
JSON_COLUMNS = frozenset(c.name for c in instances.c if isinstance(c.type, sa.JSON))
COLUMNS = [c.name for c in instances.c]
TENANT, ID = COLUMNS.index("tenant"), COLUMNS.index("id")


@dataclass(frozen=True)
class InstanceUpdate:
    tenant: str
    instance_id: str
    values: dict[str, Any]  # column -> new value
    events: list[dict[str, Any]]  # event-log rows committed with it

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.instance_id)


class InstanceWriter(Protocol):
    async def write(self, batch: list[InstanceUpdate]) -> list[Row | None]: ...

    def close(self) -> None: ...


def instance_writer(engine: AsyncEngine) -> InstanceWriter:
    path = sqlite_file(engine)
    return SqliteInstanceWriter(path) if path is not None else SqlAlchemyInstanceWriter(engine)


def rounds(batch: list[InstanceUpdate]) -> list[list[InstanceUpdate]]:
    """Consecutive runs of the batch in which no instance appears twice: an instance
    updated twice is read back between its updates, so each caller gets its own result."""
    runs: list[list[InstanceUpdate]] = [[]]
    seen: set[tuple[str, str]] = set()
    for update in batch:
        if update.key in seen:
            runs.append([])
            seen.clear()
        seen.add(update.key)
        runs[-1].append(update)
    return runs


def by_columns(updates: list[InstanceUpdate]) -> dict[tuple[str, ...], list[InstanceUpdate]]:
    groups: dict[tuple[str, ...], list[InstanceUpdate]] = {}
    for update in updates:
        groups.setdefault(tuple(sorted(update.values)), []).append(update)
    return groups


class SqlAlchemyInstanceWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, batch: list[InstanceUpdate]) -> list[Row | None]:
        results: list[Row | None] = []
        event_rows: list[dict[str, Any]] = []
        async with self._engine.begin() as conn:
            for run in rounds(batch):
                for columns, updates in by_columns(run).items():
                    parameters = [
                        {"k_tenant": u.tenant, "k_id": u.instance_id, **_named(u.values)}
                        for u in updates
                    ]
                    await conn.execute(_update_statement(columns), parameters)
                keys = [list(u.key) for u in run]
                found = {
                    (row["tenant"], row["id"]): row
                    for row in (await conn.execute(select_by_keys(), {"keys": keys})).mappings()
                }
                for update in run:
                    row = found.get(update.key)
                    results.append(row)
                    if row is not None:
                        event_rows += update.events
            await append_events(conn, event_rows)
        return results

    def close(self) -> None:
        pass


@functools.cache
def _update_statement(columns: tuple[str, ...]) -> sa.Update:
    """UPDATE of `columns` of the instance named by the parameters k_tenant and k_id."""
    key = sa.and_(
        instances.c.tenant == sa.bindparam("k_tenant"), instances.c.id == sa.bindparam("k_id")
    )
    values = {name: sa.bindparam(f"v_{name}", type_=instances.c[name].type) for name in columns}
    return sa.update(instances).where(key).values(values)


@functools.cache
def select_by_keys() -> sa.Select[Any]:
    """The instances named by the parameter `keys`, a list of (tenant, id): one compiled
    statement for any number of keys."""
    keys = sa.tuple_(instances.c.tenant, instances.c.id)
    return sa.select(instances).where(keys.in_(sa.bindparam("keys", expanding=True)))


def _named(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"v_{name}": value for name, value in values.items()}


@dataclass(frozen=True)
class Round:
    """One run of a batch, as SQL for the thread."""

    updates: list[tuple[str, list[list[Any]]]]  # (UPDATE, parameters of each row)
    select: str  # the run's rows, by key
    keys: list[str]  # tenant, id, tenant, id, ...
    events: list[tuple[tuple[str, str], list[dict[str, Any]]]]  # per update, in order


@functools.cache
def _sqlite_update(columns: tuple[str, ...]) -> str:
    # Column names come from the schema (checked by the repository), never from a caller.
    assignments = ", ".join(f"{name} = ?" for name in columns)
    return f"UPDATE instances SET {assignments} WHERE tenant = ? AND id = ?"  # noqa: S608


def _sqlite_parameters(update: InstanceUpdate, columns: tuple[str, ...]) -> list[Any]:
    values = update.values
    return [
        *(json.dumps(values[name]) if name in JSON_COLUMNS else values[name] for name in columns),
        update.tenant,
        update.instance_id,
    ]


@functools.cache
def _sqlite_select(count: int) -> str:
    keys = ", ".join(["(?, ?)"] * count)
    columns = ", ".join(COLUMNS)
    return f"SELECT {columns} FROM instances WHERE (tenant, id) IN (VALUES {keys})"  # noqa: S608


def _mapping(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row as SQLAlchemy would return it: JSON columns parsed."""
    mapping = dict(zip(COLUMNS, row, strict=True))
    for name in JSON_COLUMNS:
        if mapping[name] is not None:
            mapping[name] = json.loads(mapping[name])
    return mapping


class SqliteInstanceWriter:
    """The SQLite path: see the module's docstring."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._thread: WorkerThread | None = None  # started on the first write
        self._events = SqliteInsert(events)

    def _connect(self) -> None:
        # Autocommit mode: the transaction is the explicit BEGIN IMMEDIATE below.
        self._connection = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        tune_sqlite(self._connection, None)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()

    async def write(self, batch: list[InstanceUpdate]) -> list[Row | None]:
        # Statements and parameters are built on the loop; the thread only runs them.
        plan = [
            Round(
                [
                    (_sqlite_update(columns), [_sqlite_parameters(u, columns) for u in group])
                    for columns, group in by_columns(run).items()
                ],
                _sqlite_select(len(run)),
                [part for u in run for part in u.key],
                [(u.key, u.events) for u in run],
            )
            for run in rounds(batch)
        ]
        if self._thread is None:
            self._thread = WorkerThread("instance-writer", self._connect, self._disconnect)
        fetched = await self._thread.run(lambda: self._write(plan))
        results: list[Row | None] = []
        for run, rows in zip(plan, fetched, strict=True):
            found = {(row[TENANT], row[ID]): row for row in rows}
            results += [_mapping(found[key]) if key in found else None for key, _ in run.events]
        return results

    def _write(self, plan: list[Round]) -> list[list[tuple[Any, ...]]]:
        connection = self._connection
        assert connection is not None
        # Event rows are inserted here without `append_events`: SQLite has one writer, and
        # BEGIN IMMEDIATE takes its lock before any cursor is drawn and keeps it until COMMIT,
        # so cursors become visible in cursor order anyway.
        connection.execute("BEGIN IMMEDIATE")
        try:
            fetched, event_rows = [], []
            for run in plan:
                for sql, parameters in run.updates:
                    connection.executemany(sql, parameters)
                rows = connection.execute(run.select, run.keys).fetchall()
                found = {(row[TENANT], row[ID]) for row in rows}
                event_rows += [row for key, rows_ in run.events if key in found for row in rows_]
                fetched.append(rows)
            for sql, parameters in self._events.statements(event_rows):
                connection.execute(sql, parameters)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return fetched

    def close(self) -> None:
        if self._thread is not None:
            self._thread.close()
            self._thread = None
