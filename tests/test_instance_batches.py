"""Instance updates are group-committed (store/instance_writers.py): concurrent updates of
many instances share one transaction, with their events. Each caller still gets its own
result, an instance's state and its event commit or roll back together, and a crash in
the middle of a batch leaves every instance's state matching its last event. Run against
SQLite (its own writer thread) and PostgreSQL (SQLAlchemy)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.rpc.errors import InstanceNotFound
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.outbox_writers import INTEGRITY_ERRORS
from zapgate.gateway.store.schema import events
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.sessions.vault import Keyring, MasterKey, seal
from zapgate.v1 import event_pb2
from zapgate.v1 import instance_pb2 as pb

S = pb.InstanceState
R = pb.StateReason


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    yield engine
    await engine.dispose()


async def create(repo: InstanceRepository, count: int) -> list[str]:
    ids = [f"i{n:03d}" for n in range(count)]
    for instance_id in ids:
        await repo.create(
            InstanceRecord("acme", instance_id, instance_id, "", S.INSTANCE_STATE_DISCONNECTED)
        )
    return ids


def state_event(log: EventLog, instance_id: str, state: int) -> dict[str, object]:
    changed = event_pb2.StateChanged(state=state, reason=R.STATE_REASON_RECONNECTING)  # type: ignore[arg-type]
    return log.row("acme", instance_id, changed)


async def last_states(engine: AsyncEngine) -> dict[str, int]:
    """Each instance's state as its newest StateChanged event says."""
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(events.c.payload).order_by(events.c.cursor))).all()
    said: dict[str, int] = {}
    for (payload,) in rows:
        event = event_pb2.Event.FromString(bytes(payload))
        if event.HasField("state_changed"):
            said[event.instance_id] = event.state_changed.state
    return said


async def stored_states(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT id, state FROM instances"))).all()
    return {instance_id: int(state) for instance_id, state in rows}


async def test_concurrent_updates_share_a_transaction_and_each_gets_its_record(
    engine: AsyncEngine,
) -> None:
    repo, log = InstanceRepository(engine), EventLog(engine)
    try:
        ids = await create(repo, 300)
        records = await asyncio.gather(
            *(
                repo.update(
                    "acme",
                    instance_id,
                    {"state": S.INSTANCE_STATE_CONNECTING, "labels": {"n": instance_id}},
                    events=[state_event(log, instance_id, S.INSTANCE_STATE_CONNECTING)],
                )
                for instance_id in ids
            )
        )
        assert [r.id for r in records] == ids
        assert all(r.state == S.INSTANCE_STATE_CONNECTING for r in records)
        assert [dict(r.labels) for r in records] == [{"n": i} for i in ids]  # JSON round trip
        assert await stored_states(engine) == dict.fromkeys(ids, S.INSTANCE_STATE_CONNECTING)
        assert await last_states(engine) == dict.fromkeys(ids, S.INSTANCE_STATE_CONNECTING)
        fetched = await asyncio.gather(*(repo.require("acme", i) for i in ids))
        assert fetched == records
    finally:
        repo.close()


async def test_an_instance_updated_twice_in_a_batch_gives_each_caller_its_own_result(
    engine: AsyncEngine,
) -> None:
    repo, log = InstanceRepository(engine), EventLog(engine)
    try:
        [instance_id, other] = await create(repo, 2)
        first, second, third = await asyncio.gather(
            repo.update("acme", instance_id, {"state": S.INSTANCE_STATE_CONNECTING, "jid": "a"}),
            repo.update("acme", other, {"state": S.INSTANCE_STATE_PAIRING}),
            repo.update(
                "acme",
                instance_id,
                {"state": S.INSTANCE_STATE_CONNECTED},
                events=[state_event(log, instance_id, S.INSTANCE_STATE_CONNECTED)],
            ),
        )
        assert (first.state, first.jid) == (S.INSTANCE_STATE_CONNECTING, "a")
        assert (third.state, third.jid) == (S.INSTANCE_STATE_CONNECTED, "a")
        assert second.state == S.INSTANCE_STATE_PAIRING
        assert await last_states(engine) == {instance_id: S.INSTANCE_STATE_CONNECTED}
    finally:
        repo.close()


async def test_a_missing_instance_fails_alone_and_its_event_is_not_written(
    engine: AsyncEngine,
) -> None:
    repo, log = InstanceRepository(engine), EventLog(engine)
    try:
        [present] = await create(repo, 1)
        results = await asyncio.gather(
            *(
                repo.update(
                    "acme",
                    instance_id,
                    {"state": S.INSTANCE_STATE_CONNECTING},
                    events=[state_event(log, instance_id, S.INSTANCE_STATE_CONNECTING)],
                )
                for instance_id in (present, "gone")
            ),
            return_exceptions=True,
        )
        assert isinstance(results[0], InstanceRecord)
        assert isinstance(results[1], InstanceNotFound)
        assert await last_states(engine) == {present: S.INSTANCE_STATE_CONNECTING}
    finally:
        repo.close()


async def test_a_failing_update_rolls_back_alone_with_its_event(engine: AsyncEngine) -> None:
    """A batch that breaks a constraint is written again one update at a time: the others
    commit, the culprit's caller gets the error, and its event is not in the log."""
    repo, log = InstanceRepository(engine), EventLog(engine)
    try:
        good, bad = await create(repo, 2)
        results = await asyncio.gather(
            repo.update(
                "acme",
                good,
                {"state": S.INSTANCE_STATE_CONNECTING},
                events=[state_event(log, good, S.INSTANCE_STATE_CONNECTING)],
            ),
            repo.update(
                "acme",
                bad,
                {"state": S.INSTANCE_STATE_CONNECTING, "display_name": None},  # NOT NULL
                events=[state_event(log, bad, S.INSTANCE_STATE_CONNECTING)],
            ),
            return_exceptions=True,
        )
        assert isinstance(results[0], InstanceRecord)
        assert isinstance(results[1], INTEGRITY_ERRORS)
        assert await stored_states(engine) == {
            good: S.INSTANCE_STATE_CONNECTING,
            bad: S.INSTANCE_STATE_DISCONNECTED,
        }
        assert await last_states(engine) == {good: S.INSTANCE_STATE_CONNECTING}
    finally:
        repo.close()


# A process that commits one batch of CONNECTING transitions, then dies (os._exit, as a
# kill -9 would) inside the transaction of a second batch, after its UPDATEs ran and before
# its events and its commit.
CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, os, sys
    from zapgate.gateway.events.log import EventLog
    from zapgate.gateway.store.db import open_database
    from zapgate.gateway.store.instances import InstanceRepository
    from zapgate.gateway.store import instance_writers
    from zapgate.v1 import event_pb2
    from zapgate.v1 import instance_pb2 as pb

    async def main(url, ids):
        engine = await open_database(url)
        repo, log = InstanceRepository(engine), EventLog(engine)

        def row(instance_id, state):
            changed = event_pb2.StateChanged(state=state, reason=pb.STATE_REASON_RECONNECTING)
            return log.row("acme", instance_id, changed)

        async def move(state):
            await asyncio.gather(*(
                repo.update("acme", i, {"state": state}, events=[row(i, state)]) for i in ids
            ))

        await move(pb.INSTANCE_STATE_CONNECTING)
        real = instance_writers.append_events
        if isinstance(repo._writer, instance_writers.SqliteInstanceWriter):
            repo._writer._events.statements = lambda rows: os._exit(9)
        else:
            async def die(conn, rows):
                os._exit(9)
            instance_writers.append_events = die
        await move(pb.INSTANCE_STATE_CONNECTED)
        print("not reached", real)

    asyncio.run(main(sys.argv[1], sys.argv[2:]))
    """
)


async def test_a_crash_mid_batch_leaves_each_state_matching_its_last_event(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    repo = InstanceRepository(engine)
    try:
        ids = await create(repo, 50)
    finally:
        repo.close()
    script = tmp_path / "crashing_writer.py"
    script.write_text(CRASHING_WRITER)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), database_url, *ids],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    # The first batch committed with its events; the second left no trace at all.
    assert await stored_states(engine) == dict.fromkeys(ids, S.INSTANCE_STATE_CONNECTING)
    assert await last_states(engine) == dict.fromkeys(ids, S.INSTANCE_STATE_CONNECTING)


async def test_concurrent_snapshot_reads_share_a_query_and_each_gets_its_own(
    engine: AsyncEngine,
) -> None:
    repo, snapshots = InstanceRepository(engine), SnapshotRepository(engine)
    master = MasterKey.generate()
    try:
        ids = await create(repo, 100)
        for n, instance_id in enumerate(ids[:80]):
            image = f"store of {instance_id}".encode() * (n + 1)
            await snapshots.save("acme", instance_id, seal(master, f"acme/{instance_id}", 1, image))
        found = await asyncio.gather(*(snapshots.latest("acme", i) for i in [*ids, "gone"]))
        ring = Keyring(master)
        opened = [
            None if sealed is None else ring.open(f"acme/{instance_id}", sealed)
            for instance_id, sealed in zip([*ids, "gone"], found, strict=True)
        ]
        assert opened[:80] == [f"store of {i}".encode() * (n + 1) for n, i in enumerate(ids[:80])]
        assert opened[80:] == [None] * 21
    finally:
        repo.close()
