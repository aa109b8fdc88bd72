"""Time to restore N paired sessions from their encrypted snapshots after a reboot (empty
runtime dir) until every instance is CONNECTING, and until every one is CONNECTED, with the
simulator engine. Baseline in the same run: opening the state store and reading the N
instance rows, which any start has to do anyway.

The sessions are seeded once; each round starts a gateway on a fresh copy of that state
store, with an empty runtime dir on tmpfs (/dev/shm when there is one, as in production).

    python bench/restore_sessions.py [--instances 1000] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.config import ServeConfig
from zapgate.gateway.connections.backoff import Backoff
from zapgate.gateway.connections.master_key import load_keyring
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.schema import instances
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.sessions.sim_engine import SimTimings
from zapgate.sessions.sim_store import SimStore
from zapgate.sessions.vault import seal
from zapgate.v1 import instance_pb2 as pb

SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
SEED_CHUNK = 10


async def seed(data_dir: Path, url: str, count: int) -> None:
    """N paired simulator sessions, present only as encrypted snapshots."""
    keyring = load_keyring(data_dir, None, create=True)
    engine = await open_database(url)
    repo, snapshots = InstanceRepository(engine), SnapshotRepository(engine)

    async def one(scratch: Path, n: int) -> None:
        store = SimStore(scratch / f"{n}.db")
        store.load_or_create()
        phone = f"+55119{n:08d}"
        store.save_pairing(f"{phone[1:]}:1@s.whatsapp.net", phone)
        record = InstanceRecord(
            "bench", f"i{n:05d}", f"i{n}", phone, pb.INSTANCE_STATE_DISCONNECTED
        )
        await repo.create(record)
        await snapshots.save(
            "bench", record.id, seal(keyring.current, record.key, 1, store.path.read_bytes())
        )
        await repo.update(
            "bench", record.id, {"jid": f"{phone[1:]}:1@s.whatsapp.net", "want_connected": True}
        )

    with tempfile.TemporaryDirectory(dir=SHM) as scratch:  # no fsync per seeded store
        for first in range(0, count, SEED_CHUNK):  # a few at once: seeding 10,000 is slow
            last = min(first + SEED_CHUNK, count)
            await asyncio.gather(*(one(Path(scratch), n) for n in range(first, last)))
    await engine.dispose()


async def seeded(count: int) -> Path:
    """A data dir holding `count` seeded sessions, kept on tmpfs between runs of the
    benchmarks (seeding 10,000 takes minutes on a shared machine): copy it, never use it."""
    done = Path(SHM or tempfile.gettempdir()) / f"zapgate-bench-seed-{count}"
    if not done.exists():
        partial = done.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700)
        await seed(partial, f"sqlite+aiosqlite:///{partial / 'zapgate.db'}", count)
        partial.rename(done)
    return done


async def count_connected(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        connected = await conn.scalar(
            sa.select(sa.func.count()).where(instances.c.state == pb.INSTANCE_STATE_CONNECTED)
        )
    return int(connected or 0)


async def baseline(url: str) -> float:
    start = time.perf_counter()
    engine = await open_database(url)
    await InstanceRepository(engine).list_wanting_connection()
    await engine.dispose()
    return time.perf_counter() - start


async def restore_round(
    seeded: Path, count: int, workers: int
) -> tuple[float, float, float, float, float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir=SHM) as runtime,
    ):
        data_dir = Path(tmp) / "data"
        shutil.copytree(seeded, data_dir)
        url = f"sqlite+aiosqlite:///{data_dir / 'zapgate.db'}"
        base = await baseline(url)
        config = ServeConfig(
            listen="127.0.0.1:0",
            data_dir=data_dir,
            database_url=url,
            engine="sim",
            engine_workers=workers,
            runtime_dir=Path(runtime) / "zapgate",
            sim_timings=SimTimings(connect_seconds=0.05),
            backoff=Backoff(0.2, 2.0),
        )
        gateway = Gateway(config)
        cpu, children = time.process_time(), _children_cpu()
        start = time.perf_counter()
        await gateway.start()  # restores and marks every instance CONNECTING before serving
        connecting = time.perf_counter() - start
        # Counted from the gateway's own metrics (committed transitions): a query of the
        # state store every 20 ms cost the core hundreds of ms of CPU on a slow run.
        while connected_transitions(gateway) < count:
            await asyncio.sleep(0.02)
        connected = time.perf_counter() - start
        core_cpu = time.process_time() - cpu
        watcher = await open_database(url)
        assert await count_connected(watcher) == count  # the metric told the truth
        await watcher.dispose()
        await gateway.stop(grace=1)  # the workers exit: their CPU time is counted
        workers_cpu = _children_cpu() - children
    return connecting, connected, base, core_cpu, workers_cpu


def connected_transitions(gateway: Gateway) -> int:
    """Transitions to CONNECTED the gateway committed so far (its Prometheus counter)."""
    metric = gateway.runtime.metrics.transitions.collect()[0]
    return int(
        sum(
            sample.value
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels["state"] == "CONNECTED"
        )
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measure(count: int, workers: int, rounds: int) -> None:
    data = await seeded(count)
    results = []
    for n in range(rounds):
        connecting, connected, base, core, workers_cpu = await restore_round(data, count, workers)
        results.append(connected)
        print(
            f"round {n + 1}: all CONNECTING after {connecting:.2f} s, all CONNECTED after "
            f"{connected:.2f} s ({connected / count * 1e3:.2f} ms each); CPU: core "
            f"{core:.2f} s, workers {workers_cpu:.2f} s; "
            f"baseline (open store, read rows) {base:.3f} s; ratio {connected / base:.0f}x; "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print(
        f"{count} sessions, {workers} workers, {rounds} rounds: all CONNECTED after "
        f"median {statistics.median(results):.2f} s (min {min(results):.2f}, "
        f"max {max(results):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(measure(args.instances, args.workers, args.rounds))


if __name__ == "__main__":
    main()
