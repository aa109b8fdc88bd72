"""One `zapgate serve` per state store. Two gateways on one store would both connect every
instance: WhatsApp kicks one of the two connections of a device ("stream replaced"), both
dispatch the same outbox and deliver the same webhooks. Until nodes share instances through
leases, the second gateway refuses to start, with a message that names the first.

SQLite: an exclusive `flock` on `<database>.node-lock` (the kernel drops it when the process
dies, even by kill -9; engine workers are exec'd, so they never inherit it). PostgreSQL: a
session advisory lock on a connection of its own (outside the store's pool, which closes
first on the way out) that the gateway keeps open for its lifetime (dropped with it).

Cluster mode (`serve --cluster`, PostgreSQL only) shares the database between nodes, which
own instances through leases (gateway/cluster): each node takes the same advisory lock in
shared mode, so nodes run together, while a single-node gateway and a cluster never do."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

# pg_try_advisory_lock's key: "zapgate!" as a big-endian int64 (the event log's lock differs).
POSTGRES_LOCK_KEY = int.from_bytes(b"zapgate!", "big", signed=True)


class StoreInUse(Exception):
    """Another gateway serves this state store."""


class ClusterNeedsPostgres(StoreInUse):
    """`--cluster` on SQLite."""


class StoreClaim:
    """Held while the gateway runs; `release` when it stops."""

    def __init__(self, fd: int | None = None, connection: AsyncConnection | None = None) -> None:
        self._fd = fd
        self._connection = connection  # of an engine of its own

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops its lock
            self._fd = None
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a dead connection holds no lock either
                await self._connection.close()
            await self._connection.engine.dispose()
            self._connection = None


async def claim_store(engine: AsyncEngine, *, cluster: bool = False) -> StoreClaim:
    """The store for this gateway alone (or, with `cluster`, for cluster nodes only), or
    StoreInUse."""
    url = engine.url
    if cluster and url.get_backend_name() != "postgresql":
        raise ClusterNeedsPostgres(
            "--cluster needs PostgreSQL (--database-url postgresql://...): nodes share "
            "instances through leases in it; SQLite serves one gateway only"
        )
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return StoreClaim()  # private to this process anyway
        return StoreClaim(fd=_lock_file(Path(f"{database}.node-lock")))
    own = create_async_engine(url, poolclass=NullPool)
    connection = await own.connect()
    try:
        lock = "pg_try_advisory_lock_shared" if cluster else "pg_try_advisory_lock"
        query = sa.text(f"SELECT {lock}(:key)")
        got = (await connection.execute(query, {"key": POSTGRES_LOCK_KEY})).scalar_one()
        await connection.commit()
    except BaseException:
        await StoreClaim(connection=connection).release()
        raise
    if not got:
        await StoreClaim(connection=connection).release()
        if cluster:
            raise StoreInUse(
                f"a single-node zapgate serve already uses this PostgreSQL database "
                f"({url.render_as_string(hide_password=True)}): stop it, then start every "
                "gateway on it with --cluster"
            )
        raise StoreInUse(
            f"another zapgate serve already uses this PostgreSQL database "
            f"({url.render_as_string(hide_password=True)}): one gateway per database, unless "
            "every gateway on it runs with --cluster; stop the other one first"
        )
    return StoreClaim(connection=connection)


def _lock_file(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreInUse(
            f"another zapgate serve (pid {holder}) already uses the SQLite database "
            f"{str(path).removesuffix('.node-lock')}: SQLite serves one gateway; stop the "
            "other one first, or give each gateway its own --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
