"""A batch of rows for several tables written by PostgreSQL in one statement, so one round
trip and one implicit transaction: each table's rows go in as one array per column
(`INSERT ... SELECT * FROM unnest($1::type[], ...)`), each table in its own data-modifying
CTE, and the statement returns what the first table's RETURNING gives. asyncpg prepares the
statement once per connection (the arrays can have any length) and encodes the arrays in C,
so the event loop's work per row is taking its values out of the row dict.

The `events` table keeps the rule of `append_events`: its rows are drawn from a join with
`pg_advisory_xact_lock(EVENT_ORDER_LOCK)`, so no row (hence no cursor from the sequence)
exists before the lock is held, and the implicit transaction holds it until its commit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from zapgate.gateway.store.event_append import EVENT_ORDER_LOCK
from zapgate.gateway.store.schema import events

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_quote = _DIALECT.identifier_preparer.quote


class UnnestColumns:
    """The columns of a table that a new row gives (every one but an autoincremented key),
    their array types, and how a row dict becomes one value per column."""

    def __init__(self, table: sa.Table) -> None:
        columns = [c for c in table.c if not (c.primary_key and c.autoincrement is True)]
        self.table = table
        self.names = [c.name for c in columns]
        self.types = [_array_element_type(c.type) for c in columns]
        # Serialized as SQLAlchemy's JSON type does (json.dumps) and sent as text.
        self._json = [n for n, c in enumerate(columns) if isinstance(c.type, sa.JSON)]
        self._values = itemgetter(*self.names)

    def arrays(self, rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
        """One list per column, in the order of `names`."""
        if not rows:
            return [[] for _ in self.names]
        if len(self.names) == 1:
            return [[self._values(row) for row in rows]]
        arrays = [list(column) for column in zip(*map(self._values, rows), strict=True)]
        for n in self._json:
            arrays[n] = [json.dumps(value) for value in arrays[n]]
        return arrays


def _array_element_type(column_type: sa.types.TypeEngine[Any]) -> str:
    # Text without a length: an explicit cast to VARCHAR(n) would cut a longer value
    # silently, where the column itself rejects it, as any other INSERT would.
    if isinstance(column_type, sa.String):
        return "TEXT"
    return column_type.compile(dialect=_DIALECT)


class BatchStatement:
    """The statement for one shape of batch: rows of `returning_from` (whose RETURNING
    `returning` columns it gives back), then rows of each of `then`, in the same
    transaction."""

    def __init__(
        self, returning_from: sa.Table, returning: Sequence[str], then: Sequence[sa.Table]
    ) -> None:
        self._tables = [UnnestColumns(table) for table in (returning_from, *then)]
        parameters = iter(range(1, 10_000))
        ctes = []
        for n, table in enumerate(self._tables):
            arrays = ", ".join(f"${next(parameters)}::{kind}[]" for kind in table.types)
            rows = f"unnest({arrays}) AS new_row"
            if table.table is events:
                # No event row, so no cursor, before the lock is held (see the docstring).
                rows = (
                    f"(SELECT pg_advisory_xact_lock({EVENT_ORDER_LOCK}::bigint)) AS event_order"
                    f" CROSS JOIN {rows}"
                )
            names = ", ".join(_quote(name) for name in table.names)
            returns = f" RETURNING {', '.join(map(_quote, returning))}" if n == 0 else ""
            # Only names from the schema and numbered parameters go into the text.
            insert = f"INSERT INTO {_quote(table.table.name)} ({names})"
            ctes.append(f"batch_{n} AS ({insert} SELECT new_row.* FROM {rows}{returns})")  # noqa: S608
        self.sql = f"WITH {', '.join(ctes)} SELECT * FROM batch_0"  # noqa: S608

    def arguments(self, rows: Sequence[Sequence[dict[str, Any]]]) -> list[list[Any]]:
        """The statement's parameters: `rows` holds each table's rows, in the tables' order."""
        return [
            array
            for table, table_rows in zip(self._tables, rows, strict=True)
            for array in table.arrays(table_rows)
        ]
