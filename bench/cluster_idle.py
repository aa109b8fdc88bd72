"""Coordination cost: PostgreSQL transactions and row reads/writes per second, and CPU, of an
idle 3-node cluster holding 3,000 connected instances, against a single idle node (no
--cluster) holding 1,000 in the same run.

pg_stat_statements is not available, so the database's own counters are read
(pg_stat_database: xact_commit + xact_rollback, tup_fetched, tup_inserted, tup_updated)
before and after a quiet window; CPU is the nodes' user + system time (their engine workers
included) over the same window, from /proc. An idle single node's cost is what every node
pays anyway (snapshot checks, event retention, the scheduler); what a cluster node pays on
top is its lease loops (a renewal and a look for free instances every TTL/3) and, in
cluster mode, the periodic reads of Subscribe streams and webhook loops (none are open here).

    python bench/cluster_idle.py [--instances 3000] [--nodes 3] [--window 30] [--lease-ttl 15]
                                 [--database-url postgresql://admin@host/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cluster_setup import (
    ServerProcess,
    cpu_seconds,
    database_now_us,
    postgres,
    seeded_database,
    start_node,
    wait_connected,
)

COUNTERS = "xact_commit + xact_rollback, tup_fetched, tup_inserted + tup_updated + tup_deleted"


@dataclass(frozen=True)
class Cost:
    transactions: float  # per second
    rows_read: float
    rows_written: float
    cpu: float  # CPU seconds per second, over all the nodes


async def counters(admin_url: str, database: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            f"SELECT {COUNTERS} FROM pg_stat_database WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def idle_cost(admin_url: str, url: str, nodes: list[ServerProcess], window: float) -> Cost:
    database = url.rpartition("/")[2]
    await asyncio.sleep(window / 3)  # settle: the last snapshots and contact syncs
    before, cpu_before, started = await counters(admin_url, database), 0.0, time.monotonic()
    pids = [node.process.pid for node in nodes]
    cpu_before = cpu_seconds(pids)
    await asyncio.sleep(window)
    await asyncio.sleep(1.0)  # PostgreSQL reports a backend's counters within a second
    after = await counters(admin_url, database)
    elapsed = time.monotonic() - started
    cpu = (cpu_seconds(pids) - cpu_before) / (elapsed - 1.0)
    # Our own counters read (two transactions) is negligible against the window.
    return Cost(*((a - b) / elapsed for a, b in zip(after, before, strict=True)), cpu=cpu)


async def single(admin_url: str, root: Path, count: int, window: float) -> Cost:
    data_dir = root / "single-seed"
    data_dir.mkdir(mode=0o700)
    url = await seeded_database(admin_url, data_dir, count)
    since = await database_now_us(url)
    node = await asyncio.to_thread(start_node, root, url, data_dir / "master.key")
    try:
        await wait_connected(url, count, since)
        return await idle_cost(admin_url, url, [node], window)
    finally:
        node.close()


async def cluster(
    admin_url: str, root: Path, count: int, nodes: int, ttl: float, window: float
) -> Cost:
    data_dir = root / "cluster-seed"
    data_dir.mkdir(mode=0o700)
    url = await seeded_database(admin_url, data_dir, count)
    since = await database_now_us(url)
    flags = ("--cluster", "--lease-ttl", str(ttl), "--max-instances", str(count // nodes))
    started: list[ServerProcess] = []
    try:
        for _ in range(nodes):
            key = data_dir / "master.key"
            started.append(await asyncio.to_thread(start_node, root, url, key, *flags))
        await wait_connected(url, count, since)
        return await idle_cost(admin_url, url, started, window)
    finally:
        for node in started:
            node.close()


def show(what: str, cost: Cost) -> None:
    print(
        f"  {what}: {cost.transactions:.1f} transactions/s, {cost.rows_read:.0f} rows read/s, "
        f"{cost.rows_written:.1f} rows written/s, CPU {cost.cpu * 100:.1f}% of a core",
        flush=True,
    )


async def measure(admin_url: str, count: int, nodes: int, ttl: float, window: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = await single(admin_url, root, count // nodes, window)
        show(f"(measured first) single node, {count // nodes} instances", base)
        ours = await cluster(admin_url, root, count, nodes, ttl, window)
    per_node = Cost(*(value / nodes for value in vars(ours).values()))
    print(f"idle, {window:g} s window, lease TTL {ttl:g} s, load average {os.getloadavg()[0]:.1f}")
    show(f"single node, {count // nodes} instances", base)
    show(f"cluster of {nodes}, {count} instances", ours)
    show("per cluster node", per_node)
    print(
        f"  ratio per node / single node: transactions {per_node.transactions / base.transactions:.2f}, "
        f"CPU {per_node.cpu / base.cpu:.2f}; lease work per node "
        f"{per_node.transactions - base.transactions:+.1f} transactions/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--database-url", help="an admin URL of a PostgreSQL server")
    args = parser.parse_args()
    with postgres(args.database_url) as admin_url:
        asyncio.run(measure(admin_url, args.instances, args.nodes, args.lease_ttl, args.window))


if __name__ == "__main__":
    main()
