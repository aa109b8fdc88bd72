"""The session keeper on its own: a change stays due until a snapshot of it is stored."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import FAST_KEEPER
from zapgate.gateway.connections.session_keeper import SNAPSHOTS_AT_ONCE, SessionKeeper
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.fencing import FenceToken
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.sessions.vault import Keyring, MasterKey, SealedSession, seal


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


class VirtualClock:
    """The keeper's monotonic clock, moved by the test (polls still run on real sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def polls(keeper: SessionKeeper, count: int = 5) -> None:
    """Lets the running keeper poll a few times (poll_seconds is 0.05 in FAST_KEEPER)."""
    for _ in range(count):
        await asyncio.sleep(keeper.timings.poll_seconds * 2)


async def test_a_restored_store_is_not_read_again_by_the_first_poll(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    store, keyring, clock = (
        tmp_path / "runtime" / "session.db",
        Keyring(MasterKey.generate()),
        VirtualClock(),
    )
    snapshots = SnapshotRepository(engine)
    keeper = SessionKeeper(snapshots, keyring, lambda t, i: store, FAST_KEEPER, clock)
    image_source = tmp_path / "image.db"
    write_store(image_source)
    await InstanceRepository(engine).create(InstanceRecord("acme", "s", "s", "", 1))
    await snapshots.save("acme", "s", seal(keyring.current, "acme/s", 1, image_source.read_bytes()))
    runner = asyncio.create_task(keeper.run())
    try:
        assert await keeper.restore("acme", "s", expected_generation=1)
        keeper.watch("acme", "s")
        await polls(keeper)  # the virtual clock stands still: nothing debounces
        # It is its snapshot: no poll took it for a change (which would read and hash it).
        assert not keeper.unsaved_ages()
        assert keeper.snapshot_ages() == [0.0]
        write_store(store)  # a real change is still seen (it was quiet: on its next look)
        clock.now += FAST_KEEPER.quiet_poll_seconds
        await polls(keeper)
        assert keeper.unsaved_ages() == [0.0]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.dispose()


async def test_a_quiet_store_is_polled_less_often_and_its_change_still_saved(
    tmp_path: Path,
) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    store, clock = tmp_path / "session.db", VirtualClock()
    timings = dataclasses.replace(FAST_KEEPER, quiet_after_seconds=60, quiet_poll_seconds=5)
    snapshots = SnapshotRepository(engine)
    keeper = SessionKeeper(
        snapshots, Keyring(MasterKey.generate()), lambda t, i: store, timings, clock
    )
    runner = asyncio.create_task(keeper.run())
    try:
        await InstanceRepository(engine).create(InstanceRecord("acme", "s", "s", "", 1))
        keeper.watch("acme", "s")
        write_store(store)
        await polls(keeper)
        assert keeper.unsaved_ages() == [0.0], "a new store is polled at once"
        clock.now += 1  # settled: snapshotted
        await polls(keeper)
        first = await snapshots.latest("acme", "s")
        assert first is not None
        assert not keeper.unsaved_ages()

        clock.now += 61  # quiet for over a minute: the next poll finds it unchanged...
        await polls(keeper)
        write_store(store)  # ...and from then on it is looked at only after 2.5-5 s
        await polls(keeper)
        assert not keeper.unsaved_ages(), "a quiet store was stat-ed on every poll"
        clock.now += 5
        await polls(keeper)
        assert keeper.unsaved_ages() == [0.0]  # seen on its next look
        clock.now += 1
        await polls(keeper)
        latest = await snapshots.latest("acme", "s")
        assert latest is not None
        assert latest.generation == first.generation + 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.dispose()


async def test_a_wave_of_changed_stores_is_snapshotted_in_full(tmp_path: Path) -> None:
    """More stores change on one poll than are written at once: every one is saved."""
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    clock, count = VirtualClock(), SNAPSHOTS_AT_ONCE * 2 + 3
    snapshots = SnapshotRepository(engine)
    keeper = SessionKeeper(
        snapshots,
        Keyring(MasterKey.generate()),
        lambda t, i: tmp_path / f"{i}.db",
        FAST_KEEPER,
        clock,
    )
    repo = InstanceRepository(engine)
    runner = asyncio.create_task(keeper.run())
    try:
        for n in range(count):
            await repo.create(InstanceRecord("acme", f"s{n}", "s", "", 1))
            write_store(tmp_path / f"s{n}.db")
            keeper.watch("acme", f"s{n}")
        await polls(keeper)
        assert len(keeper.unsaved_ages()) == count
        clock.now += 1  # all settled on the same poll
        for _ in range(100):
            if not keeper.unsaved_ages():
                break
            await polls(keeper, 1)
        assert not keeper.unsaved_ages()
        for n in range(count):
            latest = await snapshots.latest("acme", f"s{n}")
            assert latest is not None
            assert latest.generation == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.dispose()


async def test_a_store_watched_again_is_polled_on_one_schedule(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    clock, store = VirtualClock(), tmp_path / "session.db"
    keeper = SessionKeeper(
        SnapshotRepository(engine),
        Keyring(MasterKey.generate()),
        lambda t, i: store,
        FAST_KEEPER,
        clock,
    )
    runner = asyncio.create_task(keeper.run())
    try:
        for _ in range(5):
            keeper.watch("acme", "s")
            await polls(keeper, 1)
            keeper.unwatch("acme", "s")
        keeper.watch("acme", "s")
        clock.now += 1  # every entry is due: the stale ones are dropped
        await polls(keeper)
        assert keeper.watched_count() == 1
        assert len(keeper._polls) == 1  # one entry per watched store, none left behind
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.dispose()
