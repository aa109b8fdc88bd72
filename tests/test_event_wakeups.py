"""Cluster mode's wake-ups across nodes, on a real PostgreSQL: another writer's commit wakes
this node's event log through LISTEN/NOTIFY; a listening connection the server kills is
noticed, polled around while it is down, and listened on again by the supervision."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from collections.abc import Callable

import asyncpg
import pytest
import sqlalchemy as sa

from tests.postgres import create_database
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.wakeups import APPLICATION_NAME, EVENTS_CHANNEL, CrossNodeWakeups
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.supervision import Supervision
from zapgate.v1 import event_pb2 as pb

HANG_GUARD = 30.0  # only against hangs: nothing here asserts a duration
_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_wakeups_{os.getpid()}_{next(_databases)}")


class Counted:
    def __init__(self) -> None:
        self.sources: Counter[str] = Counter()

    def woken(self, source: str) -> None:
        self.sources[source] += 1


async def eventually(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


async def woken_by(log: EventLog, append: Callable[[], object]) -> None:
    """`append` (another node's) wakes `log`'s waiters."""
    signal = log.signal()
    await append()  # type: ignore[misc]
    async with asyncio.timeout(HANG_GUARD):
        await signal.wait()


async def test_another_writers_commit_wakes_this_node_and_a_killed_listener_comes_back(
    postgres_url: str,
) -> None:
    engine = await open_database(postgres_url)
    other_engine = create_engine(postgres_url)  # another node: its own engine and log
    here, there = EventLog(engine), EventLog(other_engine)
    counted = Counted()
    dsn = postgres_url
    wakeups = CrossNodeWakeups(
        here,
        lambda: asyncpg.connect(dsn, server_settings={"application_name": APPLICATION_NAME}),
        counted,
        safety_poll_seconds=3600.0,  # so a wake-up while listening is a notification's
        gap_poll_seconds=0.05,
        check_seconds=0.2,
    )
    supervision = Supervision(backoff_base=0.05, backoff_cap=0.2)
    supervision.start("listener", wakeups.listen)
    supervision.start("poll", wakeups.poll)
    try:
        await eventually(lambda: wakeups.listening, "listening")
        before = counted.sources["notification"]
        await woken_by(here, lambda: there.append("acme", "i0", pb.SendingPaused(reason="1")))
        await eventually(lambda: counted.sources["notification"] > before, "a notification")

        # The server drops the listening connection: the node notices, polls meanwhile,
        # and listens again.
        async with engine.connect() as conn:
            killed = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            )
        assert killed == 1
        await eventually(lambda: not wakeups.listening, "the loss noticed")
        polls = counted.sources["poll"]
        await eventually(lambda: wakeups.listening, "listening again")
        assert counted.sources["poll"] > polls  # at least the catch-up look on reconnecting
        assert supervision.failures["listener"] >= 1  # restarted by the supervision
        before = counted.sources["notification"]
        await woken_by(here, lambda: there.append("acme", "i0", pb.SendingPaused(reason="2")))
        await eventually(lambda: counted.sources["notification"] > before, "notified again")
    finally:
        await supervision.stop()
        await other_engine.dispose()
        await engine.dispose()


async def test_a_rolled_back_append_notifies_nobody(postgres_url: str) -> None:
    """The notification is part of the appending transaction: sent on commit only."""
    engine = await open_database(postgres_url)
    received: list[str] = []
    listener = await asyncpg.connect(postgres_url)
    try:
        await listener.add_listener(EVENTS_CHANNEL, lambda *args: received.append(args[3]))
        log = EventLog(engine)
        row = log.row("acme", "i0", pb.SendingPaused(reason="never"))
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await append_events(conn, [row])
            await transaction.rollback()
        await log.append("acme", "i0", pb.SendingPaused(reason="kept"))
        # One connection's notifications arrive in commit order: one from the rolled-back
        # transaction would have come first.
        await eventually(lambda: len(received) >= 1, "the committed append notified")
        async with engine.connect() as conn:  # a round trip: nothing else is on its way
            await conn.execute(sa.text("SELECT 1"))
        assert received == [""]
    finally:
        await listener.close()
        await engine.dispose()
