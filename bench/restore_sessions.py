"""Time to restore N paired sessions from their encrypted snapshots after a reboot (empty
runtime dir) until every instance is CONNECTING, and until every one is CONNECTED, with the
simulator engine. Baseline in the same run: opening the state store and reading the N
instance rows, which any start has to do anyway.

    python bench/restore_sessions.py [--instances 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

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


async def seed(data_dir: Path, url: str, count: int) -> None:
    """N paired simulator sessions, present only as encrypted snapshots."""
    keyring = load_keyring(data_dir, None, create=True)
    engine = await open_database(url)
    repo, snapshots = InstanceRepository(engine), SnapshotRepository(engine)
    with tempfile.TemporaryDirectory() as scratch:
        for n in range(count):
            store = SimStore(Path(scratch) / f"{n}.db")
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
    await engine.dispose()


async def count_states(url: str) -> dict[int, int]:
    engine = await open_database(url)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(instances.c.state, sa.func.count()).group_by(instances.c.state)
            )
        ).all()
    await engine.dispose()
    return {int(state): int(n) for state, n in rows}


async def baseline(url: str) -> float:
    start = time.perf_counter()
    engine = await open_database(url)
    await InstanceRepository(engine).list_wanting_connection()
    await engine.dispose()
    return time.perf_counter() - start


async def measure(count: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir(mode=0o700)
        url = f"sqlite+aiosqlite:///{data_dir / 'zapgate.db'}"
        await seed(data_dir, url, count)
        base = await baseline(url)
        config = ServeConfig(
            listen="127.0.0.1:0",
            data_dir=data_dir,
            database_url=url,
            engine="sim",
            engine_workers=workers,
            runtime_dir=Path(tmp) / "runtime",
            sim_timings=SimTimings(connect_seconds=0.05),
            backoff=Backoff(0.2, 2.0),
        )
        gateway = Gateway(config)
        start = time.perf_counter()
        await gateway.start()  # restores and marks every instance CONNECTING before serving
        connecting = time.perf_counter() - start
        while (await count_states(url)).get(pb.INSTANCE_STATE_CONNECTED, 0) < count:
            await asyncio.sleep(0.05)
        connected = time.perf_counter() - start
        await gateway.stop(grace=1)
    print(
        f"{count} sessions, {workers} workers: all CONNECTING after {connecting:.2f} s, "
        f"all CONNECTED after {connected:.2f} s ({connected / count * 1e3:.2f} ms each); "
        f"baseline (open store, read rows) {base:.3f} s; ratio {connected / base:.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(measure(args.instances, args.workers))


if __name__ == "__main__":
    main()
