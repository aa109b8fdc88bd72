"""The session keeper on its own: a change stays due until a snapshot of it is stored."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import FAST_KEEPER
from zapgate.gateway.connections.session_keeper import SessionKeeper
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.fencing import FenceToken
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.sessions.vault import Keyring, MasterKey, SealedSession


class FlakySnapshots(SnapshotRepository):
    """A real repository whose saves fail until `healed` is set."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.failed = asyncio.Event()
        self.healed = False

    async def save(
        self,
        tenant: str,
        instance_id: str,
        sealed: SealedSession,
        fence: FenceToken | None = None,
    ) -> None:
        if not self.healed:
            self.failed.set()
            raise OSError("the state store is unreachable")
        await super().save(tenant, instance_id, sealed, fence)


def write_store(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
        db.execute("INSERT INTO t VALUES ('a change')")


async def test_a_failed_snapshot_leaves_the_change_due(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    store = tmp_path / "session.db"
    snapshots = FlakySnapshots(engine)
    keeper = SessionKeeper(
        snapshots, Keyring(MasterKey.generate()), lambda t, i: store, FAST_KEEPER
    )
    runner = asyncio.create_task(keeper.run())
    try:
        await InstanceRepository(engine).create(InstanceRecord("acme", "s", "s", "", 1))
        keeper.watch("acme", "s")
        write_store(store)
        await asyncio.wait_for(snapshots.failed.wait(), 20)  # guards a hang only
        assert keeper.unsaved_ages(), "the change was forgotten when its snapshot failed"
        snapshots.healed = True  # the next poll retries it by itself
        for _ in range(1000):
            if await snapshots.latest("acme", "s") is not None:
                break
            await asyncio.sleep(0.02)
        assert await snapshots.latest("acme", "s") is not None
        assert not keeper.unsaved_ages()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.dispose()
