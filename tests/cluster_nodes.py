"""Real `zapgate serve --cluster` nodes on one PostgreSQL database, for the cluster tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc.aio
import sqlalchemy as sa

from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from zapgate.gateway.connections.master_key import write_key_file
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.sessions.vault import MasterKey

LEASE_TTL = 3.0  # short, so takeovers happen within a test (and not on a busy machine)
CLUSTER_SECRET = "test-cluster-secret-0123456789"
HANG_GUARD = 60.0  # only against hangs: nothing here asserts a duration


class Cluster:
    """Nodes started in `root`, all with the same master key and database."""

    def __init__(self, root: Path, database_url: str, lease_ttl: float = LEASE_TTL) -> None:
        self.root = root
        self.lease_ttl = lease_ttl
        self.database_url = database_url
        self.key_file = root / "master.key"
        write_key_file(self.key_file, MasterKey.generate())
        self.nodes: dict[str, ServerProcess] = {}

    def start(self, name: str, *extra: str, database_url: str = "") -> ServerProcess:
        """Starts node `name`; `database_url` reaches the same database another way (through
        a proxy the test can cut); `extra` flags come last, so they win."""
        data_dir = self.root / name / "data"
        data_dir.mkdir(parents=True)
        node = ServerProcess(
            data_dir,
            "--database-url",
            database_url or self.database_url,
            "--cluster",
            "--node-id",
            name,
            "--lease-ttl",
            str(self.lease_ttl),
            "--master-key-file",
            str(self.key_file),
            "--cluster-secret",
            CLUSTER_SECRET,
            "--engine",
            "sim",
            "--engine-workers",
            "1",
            "--grace",
            "1",
            "--sim-connect-seconds",
            "0.02",
            "--reconnect-base-seconds",
            "0.05",
            "--reconnect-cap-seconds",
            "0.2",
            *extra,
            start_timeout=HANG_GUARD,  # a loaded machine may take long to import it all
        )
        self.nodes[name] = node
        return node

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    async def new_key(self, tenant: str) -> str:
        engine = await open_database(self.database_url)
        try:
            return (await ApiKeyRepository(engine).create(tenant))[0]
        finally:
            await engine.dispose()

    async def rows(self, query: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
        engine = create_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                return list(await conn.execute(sa.text(query), params))
        finally:
            await engine.dispose()

    async def leases(self) -> dict[str, tuple[str, int]]:
        """instance id -> (owner node, epoch) of every unexpired lease."""
        rows = await self.rows(
            "SELECT instance_id, owner_node, epoch FROM instance_leases "
            "WHERE expire_us > (extract(epoch from clock_timestamp()) * 1000000)::bigint"
        )
        return {str(row[0]): (str(row[1]), int(row[2])) for row in rows}  # type: ignore[call-overload]


@asynccontextmanager
async def client_of(node: ServerProcess, key: str) -> AsyncIterator[SimClient]:
    async with grpc.aio.insecure_channel(node.address) as channel:
        yield SimClient(channel, key)


async def until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Polls `check` until true; returns the seconds it took (reported, never asserted)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > HANG_GUARD:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started
