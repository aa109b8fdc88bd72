"""Connects to the state store (SQLite by default, PostgreSQL by URL) and migrates it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from zapgate.gateway.ops.file_modes import private_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_FILE_NAME = "zapgate.db"


def normalize_url(url: str) -> str:
    """Accepts plain `sqlite:///` and `postgresql://` URLs and picks the async drivers."""
    parsed = sa.engine.make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    backend = parsed.get_backend_name()
    if backend not in driver:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.set(drivername=driver[backend]).render_as_string(hide_password=False)


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The database file of an SQLite store (None for PostgreSQL or an in-memory SQLite):
    where the writers that own a `sqlite3` connection of their own open it."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return str(url.database)


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / SQLITE_FILE_NAME}"


def _make_sqlite_files_private(url: str) -> None:
    """Creates the SQLite file 0600 before SQLite does (it would use 0644 under the usual
    umask) and tightens files an older version left 0644. SQLite gives the -wal and -shm
    files the database file's mode."""
    parsed = sa.engine.make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return
    path = Path(parsed.database)
    if not path.parent.is_dir():
        return  # SQLite reports the missing directory itself
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        if Path(f"{path}{suffix}").exists():
            private_file(Path(f"{path}{suffix}"))


def create_engine(url: str, *, stalled_transaction_seconds: float | None = None) -> AsyncEngine:
    """`stalled_transaction_seconds` (PostgreSQL): the server ends a session whose open
    transaction waits that long for its client (see `stalled_transaction_settings`)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine.sync_engine, "connect", tune_sqlite)
        return engine
    connect_args = stalled_transaction_settings(stalled_transaction_seconds)
    return create_async_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
    )


def stalled_transaction_settings(seconds: float | None) -> dict[str, Any]:
    """Cluster mode: a node frozen (SIGSTOP, a VM pause) or cut off from the database inside
    a transaction keeps its locks, the event-order lock among them, and with it every other
    node's writes and then their lease renewals would wait. PostgreSQL ends such a session
    after `seconds` (idle_in_transaction_session_timeout), which frees its locks; a node
    that was frozen has lost its leases by then anyway.

    Its sessions also stop waiting for a lock after `seconds` (lock_timeout): a node frozen
    while several of its sessions waited for the event-order lock would otherwise be granted
    it by one session after another, each then idle until ended, and every node's appends
    would stall for that many times `seconds` (the cluster chaos test saw minutes). A write
    that gives up this way changes nothing; its call answers UNAVAILABLE (retry).
    Schema migrations lift it for their own transaction (`migrate`). What neither setting
    ends (a session frozen between two messages of one statement) the nodes end themselves:
    `LeaseRepository.end_stalled_sessions`."""
    if seconds is None:
        return {}
    milliseconds = str(max(1, int(seconds * 1000)))
    return {
        "server_settings": {
            "idle_in_transaction_session_timeout": milliseconds,
            "lock_timeout": milliseconds,
        }
    }


def tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI (keys create) write while the server reads; NORMAL sync is durable
    # across process crashes in WAL mode.
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Applies every pending schema migration (versioned with Alembic)."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # a migration may take long and wait
            await connection.execute(sa.text("SET LOCAL lock_timeout = 0"))
        await connection.run_sync(_upgrade_to_head)


def _upgrade_to_head(connection: sa.Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def open_database(
    url: str, *, stalled_transaction_seconds: float | None = None
) -> AsyncEngine:
    _make_sqlite_files_private(url)
    engine = create_engine(url, stalled_transaction_seconds=stalled_transaction_seconds)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine
