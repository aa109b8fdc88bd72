"""Webhook leases on a real PostgreSQL (cluster mode): one holder at a time with a rising
epoch, a delivery write under a lost lease moves nothing (nor reports a retention gap), a
hand-over releases only the epoch it held, and two nodes' lease rounds spread the webhooks
and take a dead node's."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.postgres import create_database
from tests.test_webhook_store import new_webhook
from tests.webhooks import FAST_WEBHOOKS
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.cluster.webhook_leases import WebhookChange, WebhookLeases
from zapgate.gateway.events.log import EventLog, Retention
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.fencing import FenceToken
from zapgate.gateway.store.leases import LeaseRepository
from zapgate.gateway.store.webhook_leases import WebhookLeaseRepository
from zapgate.gateway.store.webhooks import DISABLED, Failure, WebhookRecord, WebhookRepository
from zapgate.gateway.webhooks.delivery import DeliveryLoop, DeliveryParts
from zapgate.gateway.webhooks.poster import Poster
from zapgate.sessions.vault import Keyring, MasterKey
from zapgate.v1 import event_pb2 as epb

TTL = 30.0  # long: nothing here waits for an expiry, leases are released by hand
_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    name = f"zapgate_webhook_leases_{os.getpid()}_{next(_databases)}"
    return create_database(postgres_admin_url, name)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(postgres_url)
    yield engine
    await engine.dispose()


async def created(engine: AsyncEngine, *ids: str) -> WebhookRepository:
    keyring = Keyring(MasterKey.generate())
    repository = WebhookRepository(engine)
    for webhook_id in ids:
        await repository.create(new_webhook(keyring, webhook_id))
    return repository


async def test_one_holder_at_a_time_and_a_lost_lease_moves_no_cursor(engine: AsyncEngine) -> None:
    webhooks = await created(engine, "wh_a")
    leases = WebhookLeaseRepository(engine)
    key = ("acme", "wh_a")
    first = await leases.acquire(key, "n1", TTL)
    assert first is not None
    assert first[0] == 1
    assert await leases.acquire(key, "n2", TTL) is None  # n1 holds it

    n1 = FenceToken("n1", 1)
    assert await webhooks.delivered("acme", "wh_a", 5, n1)
    await leases.release("n1", key, 1)
    second = await leases.acquire(key, "n2", TTL)
    assert second is not None
    assert second[0] == 2  # a new epoch

    # n1 wakes up with its old lease: none of its delivery writes lands.
    assert not await webhooks.delivered("acme", "wh_a", 9, n1)
    failure = Failure("timed out", 1, 0, 0)
    assert not await webhooks.failed("acme", "wh_a", failure, n1)
    assert not await webhooks.stop("acme", "wh_a", DISABLED, "410", {}, n1)
    record = await webhooks.get("acme", "wh_a")
    assert record is not None
    assert (record.cursor, record.attempts, record.enabled) == (5, 0, True)
    assert await webhooks.delivered("acme", "wh_a", 9, FenceToken("n2", 2))  # the holder's

    # n1's late release of epoch 1 leaves n2's lease alone; n2 renews it.
    await leases.release("n1", key, 1)
    assert (await leases.renew("n2", [key], TTL))[key].epoch == 2
    assert await leases.renew("n1", [key], TTL) == {}


def node(engine: AsyncEngine, name: str) -> WebhookLeases:
    settings = ClusterSettings(node_id=name, lease_ttl_seconds=TTL)
    return WebhookLeases(settings, WebhookLeaseRepository(engine), LeaseRepository(engine))


def drain(leases: WebhookLeases) -> list[WebhookChange]:
    changes = []
    while not leases.changes.empty():
        changes.append(leases.changes.get_nowait())
    return changes


async def test_rounds_spread_webhooks_hand_over_and_take_a_dead_nodes(engine: AsyncEngine) -> None:
    await created(engine, "wh_a", "wh_b", "wh_c", "wh_d")
    nodes = LeaseRepository(engine)
    await nodes.register("n1", "n1:1", 100)
    n1 = node(engine, "n1")
    await n1.once()  # alone: it takes all four
    assert len(n1.held()) == 4
    assert all(c.lease is not None and c.lease.valid() for c in drain(n1))

    await nodes.register("n2", "n2:1", 100)
    n2 = node(engine, "n2")
    await n1.once()  # two live nodes: it keeps its fair share and hands the rest over
    handed = drain(n1)
    assert len(n1.held()) == 2
    assert [(c.lease, bool(c.release_epoch)) for c in handed] == [(None, True)] * 2
    await n2.once()  # not released yet (their loops have not ended): nothing to claim
    assert n2.held() == []
    for change in handed:  # the loops ended: the leases go back
        await n1.released(change.key, change.release_epoch)
    await n2.once()
    assert sorted(n1.held() + n2.held()) == [("acme", f"wh_{x}") for x in "abcd"]
    assert len(n2.held()) == 2

    # n1 dies: its leases and heartbeat stop. Once its leases are gone n2 takes them all.
    await WebhookLeaseRepository(engine).release("n1")
    await nodes.leave("n1")
    await n2.once()
    assert len(n2.held()) == 4


@dataclass(frozen=True)
class PausedLease:
    """A lease as a node that was paused past its TTL sees it: still valid by its own
    clock, while the database has given the webhook to another node since."""

    token: FenceToken

    def valid(self) -> bool:
        return True


class Lost:
    def __init__(self) -> None:
        self.counts: list[int] = []

    def delivered(self, webhook: WebhookRecord, seconds: float) -> None: ...
    def failed(self, webhook: WebhookRecord) -> None: ...
    def retried(self, webhook: WebhookRecord) -> None: ...

    def lost(self, webhook: WebhookRecord, count: int) -> None:
        self.counts.append(count)


async def test_a_retention_gap_is_reported_only_under_the_lease(engine: AsyncEngine) -> None:
    """The gap event and the cursor past it are written by the lease's holder only: a node
    whose lease was taken reports no gap (it would contradict the holder's), moves no
    cursor, and its loop ends there."""
    webhooks = await created(engine, "wh_a")
    leases = WebhookLeaseRepository(engine)
    key = ("acme", "wh_a")
    assert await leases.acquire(key, "n1", TTL) is not None
    await leases.release("n1", key, 1)
    assert await leases.acquire(key, "n2", TTL) is not None  # n2 holds it at epoch 2
    log = EventLog(engine, Retention(max_events=1, check_seconds=3600.0))
    for n in range(1, 4):
        await log.append("acme", "sales", epb.ContactsSynced(added=n))
    assert await log.trim() == 2  # cursors 1 and 2 are gone, undelivered

    async def no_body(webhook: WebhookRecord, event: epb.Event) -> bytes | None:
        return None  # nothing to POST: the test is about the gap alone

    lost = Lost()
    async with httpx.AsyncClient() as client:
        parts = DeliveryParts(
            webhooks,
            log,
            Poster(client, allow_private=True),
            FAST_WEBHOOKS,
            no_body,
            asyncio.Semaphore(1),
            lost,
        )
        record = await webhooks.get("acme", "wh_a")
        assert record is not None
        assert record.cursor == 0
        stale = DeliveryLoop(parts, record, b"key", PausedLease(FenceToken("n1", 1)))
        await asyncio.wait_for(stale.run(), 30)  # ends at the gap
        gaps = await log.read("acme", 0, (), (epb.EVENT_TYPE_WEBHOOK_STATUS_CHANGED,), 10)
        assert gaps == []
        assert lost.counts == []
        after = await webhooks.get("acme", "wh_a")
        assert after is not None
        assert after.cursor == 0

        log.closed = True  # the holder's loop ends once it has caught up
        holder = DeliveryLoop(parts, record, b"key", PausedLease(FenceToken("n2", 2)))
        await asyncio.wait_for(holder.run(), 30)
    [gap] = await log.read("acme", 0, (), (epb.EVENT_TYPE_WEBHOOK_STATUS_CHANGED,), 10)
    assert gap.webhook_status_changed.events_lost == 2
    assert gap.webhook_status_changed.cursor == 2
    assert lost.counts == [2]
    final = await webhooks.get("acme", "wh_a")
    assert final is not None
    # Past the gap, the event after it, and the gap's own event (nothing to POST for either).
    assert final.cursor == gap.cursor == 4
