"""What the cluster benchmarks share: a PostgreSQL (a throwaway one from the Debian packages'
binaries unless --database-url names a server), databases seeded with paired simulator
sessions present only as encrypted snapshots, and `zapgate serve` nodes as child processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ helpers

from restore_sessions import seed

from tests.postgres import find_bindir, running_server
from tests.processes import child_pids
from tests.server_process import ServerProcess
from zapgate.gateway.store.db import create_engine
from zapgate.v1 import instance_pb2 as pb

_names = itertools.count()
# INFO: the node says where it listens at that level.
NODE_FLAGS = ("--engine", "sim", "--sim-connect-seconds", "0.05", "--log-level", "INFO")


@contextlib.contextmanager
def postgres(admin_url: str | None) -> Iterator[str]:
    if admin_url:
        yield admin_url
        return
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL not found: apt-get install postgresql, or --database-url")
    with running_server(bindir) as url:
        yield url


async def seeded_database(admin_url: str, data_dir: Path, count: int) -> str:
    """A new database holding `count` paired sessions (want_connected); the master key that
    opens them is `data_dir/master.key`."""
    name = f"zapgate_bench_{os.getpid()}_{next(_names)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"{admin_url.rpartition('/')[0]}/{name}"
    await seed(data_dir, url, count)
    return url


# Cluster nodes need one shared secret (for forwarded calls); any 16+ characters do here.
CLUSTER_SECRET = "bench-cluster-secret-0123456789"


def start_node(root: Path, url: str, key_file: Path, *flags: str) -> ServerProcess:
    data_dir = root / f"node-{next(_names)}" / "data"
    data_dir.mkdir(parents=True)
    secret = ("--cluster-secret", CLUSTER_SECRET) if "--cluster" in flags else ()
    return ServerProcess(
        data_dir,
        "--database-url",
        url,
        "--master-key-file",
        str(key_file),
        *NODE_FLAGS,
        *secret,
        *flags,
        start_timeout=300,
    )


async def scalar(url: str, query: str, **params: object) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(sa.text(query), params) or 0)
    finally:
        await engine.dispose()


async def connected_since(url: str, since_us: int) -> int:
    """Instances CONNECTED by a state change at or after `since_us` (the database's clock)."""
    return await scalar(
        url,
        "SELECT count(*) FROM instances WHERE state = :c AND state_change_time_us >= :t",
        c=pb.INSTANCE_STATE_CONNECTED,
        t=since_us,
    )


async def database_now_us(url: str) -> int:
    return await scalar(url, "SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint")


async def wait_connected(url: str, count: int, since_us: int, guard: float = 900) -> None:
    async with asyncio.timeout(guard):  # only against hangs
        while await connected_since(url, since_us) < count:
            await asyncio.sleep(0.1)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their live children (engine workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _with_children(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _with_children(pids: list[int]) -> list[int]:
    return [*pids, *(child for pid in pids for child in child_pids(pid))]
