"""Instance leases on PostgreSQL: acquisition raises the epoch, renewal keeps only unexpired
leases, and owner-only writes (snapshots, state transitions, the outbox hand-off) commit
only under the lease the writer holds; a stale writer gets Fenced and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import _database_numbers
from tests.postgres import create_database
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.wakeups import CrossNodeWakeups
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store import handover_notices
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.event_append import lock_event_order
from zapgate.gateway.store.fencing import Fenced, FenceToken, hold_fence
from zapgate.gateway.store.handover_notices import for_node
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.leases import LeaseRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.schema import events
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.sessions.vault import MasterKey, seal
from zapgate.v1 import event_pb2, instance_pb2, message_pb2

pytestmark = pytest.mark.postgres

S = instance_pb2.InstanceState
M = message_pb2.MessageState
TTL = 60.0  # long: these tests expire leases on purpose (TTL 0 or release), never by waiting
EXPIRED = 0.0  # a lease acquired with TTL 0 has expired at once
HANG_GUARD = 30.0  # only against hangs: what it guards never comes without the fix


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_leases_{next(_database_numbers)}")


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(postgres_url)
    instances = InstanceRepository(engine)
    for name in ("a", "b", "c"):
        await instances.create(
            InstanceRecord("acme", name, name, "", S.INSTANCE_STATE_DISCONNECTED)
        )
    yield engine
    await engine.dispose()


async def test_acquire_is_exclusive_and_every_acquisition_raises_the_epoch(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "10.0.0.1:50051", 100)
    await leases.register("n2", "10.0.0.2:50051", 100)

    assert await leases.acquire("acme", "a", "n1", TTL) == 1
    assert await leases.acquire("acme", "a", "n2", TTL) is None  # held
    assert await leases.acquire("acme", "a", "n1", TTL) is None  # even by its holder
    owner = await leases.owner_of("acme", "a")
    assert owner is not None
    assert (owner.node_id, owner.address, owner.epoch) == ("n1", "10.0.0.1:50051", 1)

    await leases.release("n1", [("acme", "a")])
    assert await leases.owner_of("acme", "a") is None
    assert await leases.acquire("acme", "a", "n2", EXPIRED) == 2
    assert await leases.owner_of("acme", "a") is None  # expired at once
    assert await leases.acquire("acme", "a", "n1", TTL) == 3  # an expired lease is free
    assert await leases.acquire("acme", "b", "n2", TTL) == 1  # epochs are per instance


async def test_renewal_keeps_only_unexpired_leases_of_the_node(engine: AsyncEngine) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "h1:1", 100)
    await leases.register("n2", "h2:1", 100)
    assert await leases.acquire("acme", "a", "n1", TTL) == 1
    assert await leases.acquire("acme", "b", "n1", EXPIRED) == 1
    assert await leases.acquire("acme", "c", "n2", TTL) == 1

    held = {("acme", "a"): 1, ("acme", "b"): 1, ("acme", "c"): 1}
    renewed = await leases.renew("n1", held, TTL)
    # b expired (it must be given up, not revived); c is another node's.
    assert renewed == {("acme", "a"): 1}
    # Only the named leases: one the node gave up locally is left to expire.
    assert await leases.renew("n1", [], TTL) == {}
    assert await leases.renew("n2", [("acme", "c")], EXPIRED) == {("acme", "c"): 1}
    assert await leases.owner_of("acme", "c") is None  # renewed with TTL 0: expired

    loads = {load.node_id: load.owned for load in await leases.loads(TTL)}
    assert loads == {"n1": 1, "n2": 0}
    await leases.leave("n1")
    assert await leases.owner_of("acme", "a") is None
    assert [load.node_id for load in await leases.loads(TTL)] == ["n2"]


async def test_claimable_are_instances_wanting_a_connection_that_nobody_holds(
    engine: AsyncEngine,
) -> None:
    instances = InstanceRepository(engine)
    leases = LeaseRepository(engine)
    for name in ("a", "b", "c"):
        await instances.update("acme", name, {"want_connected": True})
    await instances.update("acme", "c", {"want_connected": False})
    assert await leases.claimable(10) == [("acme", "a"), ("acme", "b")]
    await leases.acquire("acme", "a", "n1", TTL)
    await leases.acquire("acme", "b", "n1", EXPIRED)
    assert await leases.claimable(10) == [("acme", "b")]
    assert await leases.claimable(0) == []


async def test_long_orphaned_are_those_whose_lease_expired_long_enough_ago(
    engine: AsyncEngine,
) -> None:
    instances = InstanceRepository(engine)
    leases = LeaseRepository(engine)
    for name in ("a", "b", "c"):
        await instances.update("acme", name, {"want_connected": True})
    await leases.acquire("acme", "a", "n1", -120.0)  # expired two minutes ago
    await leases.acquire("acme", "b", "n1", EXPIRED)  # expired just now
    assert await leases.claimable(10, expired_for_seconds=60) == [("acme", "a")]
    # never leased ("c") is not orphaned: placement gives it a node
    assert await leases.claimable(10) == [("acme", "a"), ("acme", "b"), ("acme", "c")]


async def test_a_stale_state_transition_is_fenced_and_changes_nothing(engine: AsyncEngine) -> None:
    instances = InstanceRepository(engine)
    leases = LeaseRepository(engine)
    events = EventLog(engine)
    old = FenceToken("n1", await leases.acquire("acme", "a", "n1", EXPIRED) or 0)
    new = FenceToken("n2", await leases.acquire("acme", "a", "n2", TTL) or 0)
    assert (old.epoch, new.epoch) == (1, 2)

    def event() -> dict[str, object]:
        return events.row("acme", "a", event_pb2.StateChanged(state=S.INSTANCE_STATE_CONNECTED))

    before = await _event_count(engine)
    with pytest.raises(Fenced, match="no longer holds"):
        await instances.update(
            "acme", "a", {"state": S.INSTANCE_STATE_CONNECTED}, events=[event()], fence=old
        )
    record = await instances.require("acme", "a")
    assert record.state == S.INSTANCE_STATE_DISCONNECTED
    assert await _event_count(engine) == before  # nor its event
    # Nor with the right epoch under another node's name.
    with pytest.raises(Fenced):
        await instances.update(
            "acme", "a", {"state": S.INSTANCE_STATE_CONNECTED}, fence=FenceToken("n1", 2)
        )
    record = await instances.update(
        "acme", "a", {"state": S.INSTANCE_STATE_CONNECTED}, events=[event()], fence=new
    )
    assert record.state == S.INSTANCE_STATE_CONNECTED
    assert await _event_count(engine) == before + 1


async def _event_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
        )


async def test_a_stale_snapshot_is_fenced_and_the_new_owners_stays(engine: AsyncEngine) -> None:
    snapshots = SnapshotRepository(engine)
    leases = LeaseRepository(engine)
    key = MasterKey.generate()
    old = FenceToken("n1", await leases.acquire("acme", "a", "n1", TTL) or 0)
    await snapshots.save("acme", "a", seal(key, "acme/a", 1, b"first"), old)
    await leases.release("n1", [("acme", "a")])  # e.g. n1 paused past its lease
    new = FenceToken("n2", await leases.acquire("acme", "a", "n2", TTL) or 0)
    await snapshots.save("acme", "a", seal(key, "acme/a", 2, b"the new owner's"), new)

    with pytest.raises(Fenced):
        await snapshots.save("acme", "a", seal(key, "acme/a", 3, b"stale"), old)
    latest = await snapshots.latest("acme", "a")
    assert latest is not None
    assert latest.generation == 2
    record = await InstanceRepository(engine).require("acme", "a")
    assert record.session_generation == 2


async def test_the_outbox_hand_off_is_fenced(engine: AsyncEngine) -> None:
    leases = LeaseRepository(engine)
    messages = MessageRepository(engine, MessageEvents(EventLog(engine)))
    try:
        stored, _ = await messages.create(
            MessageRecord("acme", "a", "5511@s.whatsapp.net", "text", {"text": "hi"})
        )
        old = FenceToken("n1", await leases.acquire("acme", "a", "n1", EXPIRED) or 0)
        with pytest.raises(Fenced):
            await messages.transition(
                "acme",
                "a",
                stored.id,
                M.MESSAGE_STATE_SENDING,
                from_states=[M.MESSAGE_STATE_QUEUED],
                fence=old,
            )
        assert (await messages.get("acme", "a", stored.id)).state == M.MESSAGE_STATE_QUEUED  # type: ignore[union-attr]
        new = FenceToken("n2", await leases.acquire("acme", "a", "n2", TTL) or 0)
        moved = await messages.transition(
            "acme",
            "a",
            stored.id,
            M.MESSAGE_STATE_SENDING,
            from_states=[M.MESSAGE_STATE_QUEUED],
            fence=new,
        )
        assert moved is not None
        assert moved.state == M.MESSAGE_STATE_SENDING
        # The new owner's takeover of the instance: its SENDING one may have gone out.
        queued = await messages.recover(("acme", "a"), new)
        assert queued == []
        settled = await messages.get("acme", "a", stored.id)
        assert settled is not None
        assert settled.state == M.MESSAGE_STATE_DELIVERY_UNKNOWN
    finally:
        messages.close()


async def test_a_takeover_waits_for_a_fenced_write_in_flight(engine: AsyncEngine) -> None:
    """The fence locks the lease row (KEY SHARE): a takeover of the lease, expired meanwhile,
    waits until the write that checked it has committed (it never slips in between)."""
    leases = LeaseRepository(engine)
    await leases.register("n1", "h1:1", 100)
    held = FenceToken("n1", await leases.acquire("acme", "a", "n1", 1.0) or 0)
    async with engine.begin() as conn:
        await hold_fence(conn, "acme", "a", held)
        while await leases.owner_of("acme", "a") is not None:  # let it expire
            await asyncio.sleep(0.1)
        takeover = asyncio.create_task(leases.acquire("acme", "a", "n2", TTL))
        await _until_a_backend_waits_on_a_lock(engine)
        assert not takeover.done()
    assert await asyncio.wait_for(takeover, 30) == 2


async def test_a_renewal_passes_a_fenced_write_that_waits_for_the_event_order(
    engine: AsyncEngine,
) -> None:
    """A fenced write holds its lease row, then waits for the event-order lock, which a paused
    node's transaction may hold for half a TTL. The owner's renewal of that row must not
    queue behind the write, or the owner loses every lease for a pause on another node."""
    leases = LeaseRepository(engine)
    await leases.register("n1", "h1:1", 100)
    held = FenceToken("n1", await leases.acquire("acme", "a", "n1", TTL) or 0)
    paused = await engine.connect()  # a node frozen while appending events
    await paused.begin()
    await lock_event_order(paused)
    try:
        async with engine.begin() as writer:
            await hold_fence(writer, "acme", "a", held)
            appending = asyncio.create_task(lock_event_order(writer))
            await _until_a_backend_waits_on_a_lock(engine)
            # The renewal of the very row the waiting write holds: it must go through.
            renewed = await asyncio.wait_for(leases.renew("n1", [("acme", "a")], TTL), HANG_GUARD)
            assert renewed == {("acme", "a"): held.epoch}
            assert not appending.done()  # the write still waits behind the paused node
            await paused.rollback()  # the paused node's session ends
            await asyncio.wait_for(appending, HANG_GUARD)
    finally:
        await paused.close()
    owner = await leases.owner_of("acme", "a")
    assert owner is not None
    assert (owner.node_id, owner.epoch) == ("n1", held.epoch)


async def test_an_acquisition_waits_for_a_fenced_write_but_a_renewal_does_not(
    engine: AsyncEngine,
) -> None:
    """Both update the lease row; only the acquisition (a new epoch) must wait for a write
    that passed its check under the old one."""
    leases = LeaseRepository(engine)
    await leases.register("n1", "h1:1", 100)
    held = FenceToken("n1", await leases.acquire("acme", "a", "n1", TTL) or 0)
    async with engine.begin() as writer:
        await hold_fence(writer, "acme", "a", held)
        await asyncio.wait_for(leases.renew("n1", [("acme", "a")], TTL), HANG_GUARD)
        await leases.release("n1", [("acme", "a")])  # the owner lets it go meanwhile
        takeover = asyncio.create_task(leases.acquire("acme", "a", "n2", TTL))
        await _until_a_backend_waits_on_a_lock(engine)
        assert not takeover.done()
    assert await asyncio.wait_for(takeover, HANG_GUARD) == held.epoch + 1


async def _until_a_backend_waits_on_a_lock(engine: AsyncEngine) -> None:
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    for _ in range(300):  # a hang guard, not a timing
        async with engine.connect() as conn:
            if (await conn.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the takeover never waited on the lease row")


async def test_a_handed_over_lease_is_reserved_for_its_target_until_the_reservation_ends(
    engine: AsyncEngine,
) -> None:
    instances = InstanceRepository(engine)
    leases = LeaseRepository(engine)
    for name, address in (("n1", "h1:1"), ("n2", "h2:1"), ("n3", "h3:1")):
        await leases.register(name, address, 100)
    await instances.update("acme", "a", {"want_connected": True})
    assert await leases.acquire("acme", "a", "n1", TTL) == 1
    # Only the holder at its epoch hands it over.
    assert not await leases.hand_over(("acme", "a"), "n1", 7, "n2", TTL)
    assert not await leases.hand_over(("acme", "a"), "n3", 1, "n2", TTL)
    assert await leases.hand_over(("acme", "a"), "n1", 1, "n2", TTL)

    # Nobody holds it, but it is n2's: the others neither claim nor acquire it.
    assert await leases.claimable(10) == []
    assert await leases.reserved_for("n3", 10) == []
    assert await leases.acquire("acme", "a", "n3", TTL) is None
    owner = await leases.owner_of("acme", "a")
    assert owner is not None
    assert (owner.node_id, owner.address) == ("n2", "h2:1")
    loads = {load.node_id: load.owned for load in await leases.loads(TTL)}
    assert loads == {"n1": 0, "n2": 1, "n3": 0}  # counted for n2 already
    assert await leases.reserved_for("n2", 10) == [("acme", "a")]
    assert await leases.acquire("acme", "a", "n2", TTL) == 2  # n2 claims it: fenced epoch
    assert await leases.reserved_for("n2", 10) == []
    assert await leases.release("n2") is None

    # A reservation that ended (its node never came) leaves the lease to anyone.
    assert await leases.acquire("acme", "a", "n1", TTL) == 3
    assert await leases.hand_over(("acme", "a"), "n1", 3, "n2", EXPIRED)
    assert await leases.claimable(10) == [("acme", "a")]
    assert await leases.acquire("acme", "a", "n3", TTL) == 4


async def test_a_new_instance_is_reserved_for_a_node_only_while_nobody_holds_it(
    engine: AsyncEngine,
) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "h1:1", 100)
    await leases.register("n2", "h2:1", 100)
    assert await leases.reserve(("acme", "b"), "n2", TTL)  # never leased before
    assert not await leases.reserve(("acme", "b"), "n1", TTL)  # already n2's
    assert await leases.acquire("acme", "b", "n1", TTL) is None
    assert await leases.acquire("acme", "b", "n2", TTL) == 1  # the first epoch
    assert not await leases.reserve(("acme", "b"), "n1", TTL)  # held
    await leases.retire("n2")
    assert {load.node_id: load.max_instances for load in await leases.loads(TTL)} == {
        "n1": 100,
        "n2": 0,
    }


async def test_the_node_a_lease_is_reserved_for_is_told_at_once(engine: AsyncEngine) -> None:
    leases = LeaseRepository(engine)
    await leases.register("n1", "h1:1", 100)
    await leases.register("n2", "h2:1", 100)
    told = {"n2": asyncio.Event(), "n3": asyncio.Event()}
    listeners = []
    for node in told:  # each node's one listening connection (events/wakeups.py)
        wakeups = CrossNodeWakeups.for_database(EventLog(engine), engine, node_id=node)
        wakeups.on_channel(handover_notices.CHANNEL, for_node(node, told[node].set))
        listeners.append((wakeups, asyncio.create_task(wakeups.listen())))
    try:
        for wakeups, _ in listeners:  # only against a hang: nothing asserts a duration
            async with asyncio.timeout(30):
                while not wakeups.listening:
                    await asyncio.sleep(0.01)
        assert await leases.acquire("acme", "a", "n1", TTL) == 1
        assert await leases.hand_over(("acme", "a"), "n1", 1, "n2", TTL)
        await asyncio.wait_for(told["n2"].wait(), 30)  # 30 s only guards a hang
        assert await leases.reserve(("acme", "b"), "n3", TTL)
        await asyncio.wait_for(told["n3"].wait(), 30)
        told["n2"].clear()
        assert not await leases.hand_over(("acme", "a"), "n1", 1, "n2", TTL)  # not n1's now
        await asyncio.sleep(0.5)
        assert not told["n2"].is_set()  # a refused hand-over tells nobody
    finally:
        for _, listener in listeners:
            listener.cancel()
        await asyncio.gather(*(task for _, task in listeners), return_exceptions=True)
