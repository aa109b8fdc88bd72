"""Takeover: time from a node's death (kill -9) until all of its instances are CONNECTED on
the other nodes, against the same restore on a single node in the same run.

Baseline: a single-node `zapgate serve` (no --cluster) started on a database holding N paired
sessions only as encrypted snapshots: time from its start until all N are CONNECTED.
Measured: three `--cluster` nodes on another such database; node A starts alone and takes
the N instances (its maximum is N), then B and C start; A is killed with -9, and the time
runs until all N are CONNECTED again on B and C. The takeover waits for A's leases to
expire (one TTL) and for the next look for free instances (within TTL/3), then restores
the same snapshots: so the figure is printed with the TTL taken off too.

    python bench/cluster_takeover.py [--instances 1000] [--lease-ttl 15] [--rounds 1]
                                     [--database-url postgresql://admin@host/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from cluster_setup import (
    database_now_us,
    postgres,
    scalar,
    seeded_database,
    start_node,
    wait_connected,
)


async def single_node_restore(admin_url: str, root: Path, count: int) -> float:
    data_dir = root / "single-seed"
    data_dir.mkdir(mode=0o700)
    url = await seeded_database(admin_url, data_dir, count)
    since = await database_now_us(url)
    started = time.monotonic()
    node = await asyncio.to_thread(start_node, root, url, data_dir / "master.key")
    try:
        await wait_connected(url, count, since)
        return time.monotonic() - started
    finally:
        node.close()


async def cluster_takeover(admin_url: str, root: Path, count: int, ttl: float) -> float:
    data_dir = root / "cluster-seed"
    data_dir.mkdir(mode=0o700)
    url = await seeded_database(admin_url, data_dir, count)
    key = data_dir / "master.key"

    def node(name: str) -> object:
        return start_node(
            root, url, key, "--cluster", "--node-id", name, "--lease-ttl", str(ttl),
            "--max-instances", str(count),
        )  # fmt: skip

    since = await database_now_us(url)
    a = await asyncio.to_thread(node, "a")
    others = []
    try:
        await wait_connected(url, count, since)  # A holds them all
        others = [await asyncio.to_thread(node, name) for name in ("b", "c")]
        # On a loaded machine A may have lost a few leases already: those moved early.
        held = "SELECT count(*) FROM instance_leases WHERE owner_node = :n"
        print(f"  A holds {await scalar(url, held, n='a')} of {count} when it is killed")
        killed_at = await database_now_us(url)
        started = time.monotonic()
        a.process.kill()  # type: ignore[attr-defined]
        await wait_connected(url, count, killed_at)
        took = time.monotonic() - started
        moved = "SELECT count(*) FROM instance_leases WHERE owner_node IN ('b', 'c')"
        assert await scalar(url, moved) == count, "not every instance moved to B or C"
        return took
    finally:
        for process in [a, *others]:
            process.close()  # type: ignore[attr-defined]


async def measure(admin_url: str, count: int, ttl: float, rounds: int) -> None:
    for n in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            single = await single_node_restore(admin_url, root, count)
            print(f"  single-node restore of {count}: {single:.2f} s", flush=True)
            takeover = await cluster_takeover(admin_url, root, count, ttl)
        print(
            f"round {n + 1}: {count} instances; single-node restore {single:.2f} s; takeover "
            f"after kill -9 {takeover:.2f} s (lease TTL {ttl:g} s; {takeover - ttl:.2f} s "
            f"without it); ratio {takeover / single:.2f} ({(takeover - ttl) / single:.2f} "
            f"without the TTL); load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--database-url", help="an admin URL of a PostgreSQL server")
    args = parser.parse_args()
    with postgres(args.database_url) as admin_url:
        asyncio.run(measure(admin_url, args.instances, args.lease_ttl, args.rounds))


if __name__ == "__main__":
    main()
