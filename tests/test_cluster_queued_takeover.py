"""A send accepted by an instance's owner commits unfenced, so the instance's lease can move
between the ownership check and the commit: handed over, or taken after it expired. If the
new owner's adoption read the outbox before the commit, it never saw the message, and the
old owner forgot it with the instance: QUEUED forever. These tests replay both interleavings
on real PostgreSQL with two real dispatchers: the new owner is told and schedules it."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.postgres import create_database
from zapgate.gateway.cluster.node import ClusterNode
from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.wakeups import CrossNodeWakeups
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store import queue_notices
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.schema import instance_leases
from zapgate.sessions.pool import PoolConfig, WorkerPool
from zapgate.v1 import instance_pb2 as ipb

pytestmark = pytest.mark.postgres

TTL = 30.0  # leases never expire by themselves during a test
HANG_GUARD = 30.0  # only against hangs: nothing here asserts a duration
SHOP: InstanceKey = ("acme", "shop")
_databases = itertools.count()


class HeldCommit(MessageRepository):
    """The outbox of the old owner, whose next commit waits until the test lets it go: the
    window in which the lease moves."""

    def __init__(self, engine: AsyncEngine, events: MessageEvents) -> None:
        super().__init__(engine, events)
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def create(self, record: MessageRecord) -> tuple[MessageRecord, bool]:
        self.entered.set()
        await self.go.wait()
        return await super().create(record)


async def ignore(*_: object) -> None:
    """The pools are never started: nothing is sent, only scheduled."""


@dataclass
class Node:
    ownership: Ownership
    dispatcher: Dispatcher
    messages: MessageRepository


@dataclass
class Two:
    engine: AsyncEngine
    leases: LeaseRepository
    old: Node  # n1, with the held commit
    new: Node  # n2
    told: asyncio.Queue[InstanceKey]  # n2's queue notices


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_queued_{os.getpid()}_{next(_databases)}")


@pytest.fixture
async def two(postgres_url: str, tmp_path: Path) -> AsyncIterator[Two]:
    engine = await open_database(postgres_url)
    events = EventLog(engine)
    await InstanceRepository(engine).create(
        InstanceRecord("acme", "shop", "shop", "", ipb.INSTANCE_STATE_CONNECTED)
    )
    leases = LeaseRepository(engine)
    nodes = []
    for name, messages in (
        ("n1", HeldCommit(engine, MessageEvents(events))),
        ("n2", MessageRepository(engine, MessageEvents(events))),
    ):
        await leases.register(name, f"{name}:1", 100)
        ownership = Ownership(leases, name, TTL)
        pool = WorkerPool(PoolConfig(size=1, engine="sim", socket_dir=tmp_path), ignore, ignore)
        dispatcher = Dispatcher(
            messages,
            InstanceRepository(engine),
            InboundRepository(engine),
            pool,
            events,
            fencing=ownership,
            unowned=ownership,
        )
        nodes.append(Node(ownership, dispatcher, messages))
    told: asyncio.Queue[InstanceKey] = asyncio.Queue()
    wakeups = CrossNodeWakeups.for_database(events, engine, node_id="n2")
    wakeups.on_channel(queue_notices.CHANNEL, queue_notices.for_node("n2", told.put_nowait))
    listening = asyncio.create_task(wakeups.listen())
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not wakeups.listening:
                await asyncio.sleep(0.01)
        yield Two(engine, leases, nodes[0], nodes[1], told)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        for node in nodes:
            node.messages.close()
        await engine.dispose()


def a_text(text: str) -> MessageRecord:
    return MessageRecord(*SHOP, "5511@s.whatsapp.net", "text", {"text": text})


async def n2_is_told_and_schedules_it(two: Two, message: MessageRecord) -> None:
    async with asyncio.timeout(HANG_GUARD):
        assert await two.told.get() == SHOP
    await two.new.dispatcher.requeue(*SHOP)  # what n2's node does with the notice
    assert two.new.dispatcher.scheduler.holds("acme/shop", message.id)
    await two.new.dispatcher.requeue(*SHOP)  # a second notice changes nothing
    assert (await two.new.dispatcher.stats(*SHOP)).queued == 1


async def test_a_send_committed_after_the_hand_over_reaches_the_new_owner(two: Two) -> None:
    old, new = two.old, two.new
    assert isinstance(old.messages, HeldCommit)
    assert await old.ownership.acquire(SHOP)
    await old.dispatcher.adopt(*SHOP)
    await old.dispatcher.require_instance(*SHOP)  # as the connection's first state does
    epoch = old.ownership.held()[SHOP]

    # n1 checks that it owns the instance, then its commit waits...
    accepting = asyncio.create_task(old.dispatcher.accept(a_text("in the window")))
    async with asyncio.timeout(HANG_GUARD):
        await old.messages.entered.wait()
    # ...while it hands the instance over (cluster/handover.py's steps, but the
    # connection's), and n2 takes it and adopts it: its adoption reads an outbox without it.
    await old.dispatcher.hand_over(*SHOP)
    old.ownership.left(SHOP)
    assert not old.dispatcher.release(*SHOP)  # nothing was queued there yet
    assert await two.leases.hand_over(SHOP, "n1", epoch, "n2", TTL)
    assert await new.ownership.acquire(SHOP)
    await new.dispatcher.adopt(*SHOP)
    assert (await new.dispatcher.stats(*SHOP)).queued == 0

    old.messages.go.set()
    async with asyncio.timeout(HANG_GUARD):
        message, created = await accepting
    assert created
    # Not scheduled on n1, which no longer serves the instance (it would sit there forever).
    assert not old.dispatcher.scheduler.holds("acme/shop", message.id)
    await n2_is_told_and_schedules_it(two, message)


async def test_a_send_scheduled_after_the_lease_was_taken_reaches_the_new_owner(two: Two) -> None:
    old, new = two.old, two.new
    assert isinstance(old.messages, HeldCommit)
    old.messages.go.set()  # no window needed: n1 does not know yet that it lost the lease
    assert await old.ownership.acquire(SHOP)
    await old.dispatcher.adopt(*SHOP)

    # n1 was paused past its lease: n2 took the instance over and adopted it.
    async with two.engine.begin() as conn:
        await conn.execute(sa.update(instance_leases).values(expire_us=0))
    assert await new.ownership.acquire(SHOP)
    await new.dispatcher.adopt(*SHOP)

    # n1 still believes it owns it: it accepts a send and schedules it itself...
    message, created = await old.dispatcher.accept(a_text("before n1 notices"))
    assert created
    assert old.dispatcher.scheduler.holds("acme/shop", message.id)
    assert two.told.empty()

    # ...until its renewal finds the lease lost: the node releases the instance, and since
    # messages waited there, the new owner is told to look at the outbox.
    node = ClusterNode(
        ClusterSettings(node_id="n1", lease_ttl_seconds=TTL),
        two.leases,
        old.ownership,
        Supervisor(),  # type: ignore[arg-type]
        old.dispatcher,
        lambda _channel, _on_notice: None,  # n1's own notices are not under test
    )
    old.ownership.drop(SHOP, "its renewal found it taken")
    await node._release(SHOP)
    assert not old.dispatcher.scheduler.holds("acme/shop", message.id)
    await n2_is_told_and_schedules_it(two, message)


class Supervisor:
    """Stands for the connection side of a release (no connection runs here)."""

    async def release(self, tenant: str, instance_id: str) -> None:
        pass
