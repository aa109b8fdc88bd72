"""The session keeper told of store writes by inotify: a quiet store is never stat-ed, and a
write is looked at right away (real inotify on real SQLite files; the keeper's clock is
virtual, so nothing here is due by time alone)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.conftest import FAST_KEEPER
from tests.test_session_keeper import VirtualClock, polls, write_store
from zapgate.gateway.connections.session_keeper import SessionKeeper
from zapgate.gateway.connections.store_watch import StoreWatch, open_store_watch
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.sessions.vault import Keyring, MasterKey

QUIET = dataclasses.replace(FAST_KEEPER, quiet_after_seconds=60, quiet_poll_seconds=5)


def store_watch() -> StoreWatch:
    watch = open_store_watch()
    if watch is None:
        pytest.skip("no inotify here")
    return watch


@dataclasses.dataclass
class Keeping:
    keeper: SessionKeeper
    snapshots: SnapshotRepository
    clock: VirtualClock

    async def generation(self, instance_id: str = "s") -> int:
        latest = await self.snapshots.latest("acme", instance_id)
        return latest.generation if latest is not None else 0


@asynccontextmanager
async def keeping(
    tmp_path: Path, store_of: dict[str, Path], watch: StoreWatch | None
) -> AsyncIterator[Keeping]:
    """A running keeper of the stores `store_of` names (instance id -> store file)."""
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    clock, snapshots = VirtualClock(), SnapshotRepository(engine)
    for instance_id in store_of:
        await InstanceRepository(engine).create(InstanceRecord("acme", instance_id, "s", "", 1))
    keeper = SessionKeeper(
        snapshots,
        Keyring(MasterKey.generate()),
        lambda t, i: store_of[i],
        QUIET,
        clock,
        store_watch=watch,
    )
    runner = asyncio.create_task(keeper.run())
    try:
        yield Keeping(keeper, snapshots, clock)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        keeper.close()
        await engine.dispose()


async def until(keeper: SessionKeeper, condition: Callable[[], bool]) -> None:
    """Lets the keeper poll until `condition` holds (a bound against a hang only: a busy
    machine may need more than a few polls)."""
    for _ in range(200):
        if condition():
            return
        await polls(keeper, 1)
    assert condition()


async def snapshotted_once(keeping: Keeping, store: Path) -> None:
    """The store's first snapshot, then a minute of quiet."""
    keeping.keeper.watch("acme", "s")
    write_store(store)
    await until(keeping.keeper, lambda: bool(keeping.keeper.unsaved_ages()))
    keeping.clock.now += 1  # settled
    await until(keeping.keeper, lambda: not keeping.keeper.unsaved_ages())
    assert await keeping.generation() == 1
    keeping.clock.now += 61  # quiet: polled, it would now be looked at every 2.5-5 s
    await polls(keeping.keeper)


async def test_a_quiet_watched_store_is_not_polled_and_a_write_is_seen_at_once(
    tmp_path: Path,
) -> None:
    store = tmp_path / "acme" / "s" / "session.db"
    store.parent.mkdir(parents=True)
    async with keeping(tmp_path, {"s": store}, store_watch()) as keeping_:
        await snapshotted_once(keeping_, store)
        # A change no write reports (a new mtime): a poll would see it, inotify does not.
        os.utime(store, ns=(1, 1))
        await polls(keeping_.keeper)
        assert not keeping_.keeper.unsaved_ages(), "a quiet watched store was stat-ed"
        # A real write: seen on the next look, without waiting out the quiet poll interval
        # (the virtual clock stands still; polled, it would be seen only 2.5-5 s later).
        write_store(store)
        await until(keeping_.keeper, lambda: keeping_.keeper.unsaved_ages() == [0.0])
        keeping_.clock.now += 1
        await until(keeping_.keeper, lambda: not keeping_.keeper.unsaved_ages())
        assert await keeping_.generation() == 2


async def test_without_inotify_the_same_write_waits_for_the_quiet_poll(tmp_path: Path) -> None:
    """The fallback (and what the test above would see without inotify): polled stores."""
    store = tmp_path / "session.db"
    async with keeping(tmp_path, {"s": store}, None) as keeping_:
        await snapshotted_once(keeping_, store)
        write_store(store)
        await polls(keeping_.keeper)
        assert not keeping_.keeper.unsaved_ages()  # not looked at yet
        keeping_.clock.now += QUIET.quiet_poll_seconds
        await until(keeping_.keeper, lambda: keeping_.keeper.unsaved_ages() == [0.0])


async def test_a_write_that_keeps_mtime_and_size_is_still_snapshotted(tmp_path: Path) -> None:
    """mtime moves in clock ticks and an update can keep the size: the fingerprint alone
    can miss a write, the reported write cannot."""
    store = tmp_path / "acme" / "s" / "session.db"
    store.parent.mkdir(parents=True)
    async with keeping(tmp_path, {"s": store}, store_watch()) as keeping_:
        await snapshotted_once(keeping_, store)
        before = store.stat()
        with sqlite3.connect(store) as db:
            db.execute("UPDATE t SET v = 'b change'")  # same length: same size
        os.utime(store, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert (store.stat().st_size, store.stat().st_mtime_ns) == (
            before.st_size,
            before.st_mtime_ns,
        )
        await until(keeping_.keeper, lambda: bool(keeping_.keeper.unsaved_ages()))
        keeping_.clock.now += 1
        await until(keeping_.keeper, lambda: not keeping_.keeper.unsaved_ages())
        assert await keeping_.generation() == 2


async def test_a_store_whose_directory_comes_later_is_polled_then_watched(
    tmp_path: Path,
) -> None:
    store = tmp_path / "acme" / "s" / "session.db"
    watch = store_watch()
    async with keeping(tmp_path, {"s": store}, watch) as keeping_:
        keeping_.keeper.watch("acme", "s")
        assert not watch.watching(("acme", "s"))  # no directory to watch yet: polled
        store.parent.mkdir(parents=True)
        await snapshotted_once(keeping_, store)
        assert watch.watching(("acme", "s"))  # watched once its store exists
        write_store(store)
        await until(keeping_.keeper, lambda: keeping_.keeper.unsaved_ages() == [0.0])


async def test_a_removed_directory_falls_back_to_polling(tmp_path: Path) -> None:
    store = tmp_path / "acme" / "s" / "session.db"
    store.parent.mkdir(parents=True)
    watch = store_watch()
    async with keeping(tmp_path, {"s": store}, watch) as keeping_:
        await snapshotted_once(keeping_, store)
        shutil.rmtree(store.parent)  # e.g. a cluster node clearing its runtime dir
        await until(keeping_.keeper, lambda: not watch.watching(("acme", "s")))
        store.parent.mkdir(parents=True)  # a new directory: the old watch is of no use
        write_store(store)  # seen by polling, then watched again
        write_store(store)  # (two rows: not the image of generation 1)
        await until(keeping_.keeper, lambda: watch.watching(("acme", "s")))
        keeping_.clock.now += 1
        await until(keeping_.keeper, lambda: not keeping_.keeper.unsaved_ages())
        assert await keeping_.generation() == 2
        # The new directory's watch reports the next write (the clock stands still).
        keeping_.clock.now += 61
        await polls(keeping_.keeper)
        write_store(store)
        await until(keeping_.keeper, lambda: keeping_.keeper.unsaved_ages() == [0.0])


def test_journal_and_wal_writes_belong_to_their_store_and_shared_memory_does_not(
    tmp_path: Path,
) -> None:
    watch = store_watch()
    try:
        a, b = tmp_path / "a.db", tmp_path / "b.db"  # two stores in one directory
        assert watch.add(("acme", "a"), a)
        assert watch.add(("acme", "b"), b)
        for name in ("a.db-journal", "a.db-wal", "a.db-shm", "other.db", "b.db-shm"):
            (tmp_path / name).write_bytes(b"x")
        assert watch.read().written == [("acme", "a")]
        watch.remove(("acme", "a"))
        (tmp_path / "a.db").write_bytes(b"x")
        (tmp_path / "b.db").write_bytes(b"x")
        assert watch.read().written == [("acme", "b")]  # one watch, still there for b
    finally:
        watch.close()


def test_a_closed_watch_refuses_new_stores_and_forgets_old_ones_quietly(tmp_path: Path) -> None:
    """Late watch/unwatch calls while the node stops must not raise."""
    watch = store_watch()
    assert watch.add(("acme", "a"), tmp_path / "a.db")
    watch.close()
    assert not watch.add(("acme", "b"), tmp_path / "b.db")
    watch.remove(("acme", "a"))
    assert not watch.watching(("acme", "a"))
