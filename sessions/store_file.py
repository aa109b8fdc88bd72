"""Consistent copies of an SQLite session store that another process has open.

Called by the core, never inside the worker hosting the store (docs/engine.md, hazard 3: two
SQLite copies in one process drop each other's locks). From another process normal SQLite locking
works: in rollback-journal mode (whatsmeow's and the simulator's default) a read transaction
holds a SHARED lock, so no writer can commit while the file is read and the bytes are exactly
the database; in WAL mode the online backup API copies a consistent image instead."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path


def read_store(path: Path) -> bytes:
    """A consistent image of the database at `path` (FileNotFoundError if there is none)."""
    if not path.exists():
        raise FileNotFoundError(path)
    uri = f"file:{path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)) as db:
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return _backup_image(db)
        db.execute("BEGIN")
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the SHARED lock
            return path.read_bytes()
        finally:
            db.execute("COMMIT")


def _backup_image(source: sqlite3.Connection) -> bytes:
    with closing(sqlite3.connect(":memory:")) as copy:
        source.backup(copy)
        return copy.serialize()


def write_store(path: Path, image: bytes) -> None:
    """Writes a database image as the store file (private, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.restoring")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(image)
        out.flush()
        os.fsync(out.fileno())
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    temporary.replace(path)
