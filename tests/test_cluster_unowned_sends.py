"""A message for an instance no node serves is queued in the shared outbox, as a single
gateway queues one for a disconnected instance, and the node that connects the instance
next sends it. If a node takes the instance between the check and the commit, that node is
told (its adoption may have read the outbox before the commit)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_nodes import Cluster, client_of
from tests.messaging import FAST_POLICY, Messenger
from tests.postgres import create_database
from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.wakeups import CrossNodeWakeups
from zapgate.gateway.store import queue_notices
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2

pytestmark = pytest.mark.postgres

M = message_pb2.MessageState
TTL = 30.0
HANG_GUARD = 30.0  # only against hangs: nothing here asserts a duration
_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_unowned_{os.getpid()}_{next(_databases)}")


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, postgres_url)
    yield cluster
    cluster.close()


async def test_a_send_to_an_instance_no_node_serves_waits_for_the_next_owner(
    cluster: Cluster,
) -> None:
    cluster.start("n1")
    cluster.start("n2")
    key = await cluster.new_key("acme")
    async with client_of(cluster.nodes["n1"], key) as on_n1:
        messenger = Messenger(on_n1)
        await on_n1.create("later")
        await messenger.set_policy("later", FAST_POLICY)
        # No node has connected it: accepted and queued, not refused.
        queued = await messenger.send_text("later", "+5511960000061", "when you are online")
        assert queued.state == M.MESSAGE_STATE_QUEUED
        assert "later" not in await cluster.leases()
        again = await messenger.send_text(
            "later", "+5511960000062", "second", idempotency_key="k-later"
        )
        assert (
            await messenger.send_text(
                "later", "+5511960000062", "second", idempotency_key="k-later"
            )
        ).id == again.id  # the idempotency key holds for queued ones too

    # Connected on the other node: its adoption finds both in the shared outbox and sends.
    async with client_of(cluster.nodes["n2"], key) as on_n2:
        result = await on_n2.pair("later", "+5511944400001")
        assert (await cluster.leases())["later"][0] == "n2"
        assert result.outcome == ipb.CONNECT_OUTCOME_CONNECTED
        messenger = Messenger(on_n2)
        for message in (queued, again):
            sent = await messenger.wait_message(
                "later", message.id, lambda m: m.state == M.MESSAGE_STATE_READ
            )
            assert sent.state == M.MESSAGE_STATE_READ
        received = [m.text for m in await messenger.received("later") if m.kind == "text"]
        assert sorted(received) == ["second", "when you are online"]  # each once


async def test_the_node_that_took_the_instance_meanwhile_is_told(postgres_url: str) -> None:
    engine = await open_database(postgres_url)
    try:
        await InstanceRepository(engine).create(InstanceRecord("acme", "shop", "shop", "", 1))
        leases = LeaseRepository(engine)
        for node in ("n1", "n2"):
            await leases.register(node, f"{node}:1", 100)
        here, there = Ownership(leases, "n1", TTL), Ownership(leases, "n2", TTL)
        told: asyncio.Queue[InstanceKey] = asyncio.Queue()
        wakeups = CrossNodeWakeups.for_database(EventLog(engine), engine, node_id="n2")
        wakeups.on_channel(queue_notices.CHANNEL, queue_notices.for_node("n2", told.put_nowait))
        listening = asyncio.create_task(wakeups.listen())
        try:
            async with asyncio.timeout(HANG_GUARD):
                while not wakeups.listening:
                    await asyncio.sleep(0.01)
            # Nobody serves it: nothing to tell.
            assert not await here.accepted_unowned("acme", "shop")
            assert told.empty()
            # n2 took it between n1's check and n1's commit: n2 is told.
            assert await there.acquire(("acme", "shop"))
            assert not await here.accepted_unowned("acme", "shop")
            async with asyncio.timeout(HANG_GUARD):
                assert await told.get() == ("acme", "shop")
            # n1 took it itself meanwhile: n1 schedules it, nobody else is told.
            await leases.release("n2", [("acme", "shop")])
            assert await here.acquire(("acme", "shop"))
            assert await here.accepted_unowned("acme", "shop")
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
    finally:
        await engine.dispose()
