"""Cursor order is commit order on PostgreSQL: many transactions append events at once, in
this process and in another one, while subscribers poll the log from their last cursor; each
subscriber must see every event exactly once, in cursor order. Without `append_events`'s
lock a transaction that drew cursor N can commit after one that drew N+1, and a subscriber
that read N+1 first never sees N."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.event_appenders import log_appends, state_changes
from tests.postgres import create_database
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.schema import events
from zapgate.v1 import instance_pb2 as ipb

pytestmark = pytest.mark.postgres

TENANT = "acme"
COUNT = 150  # appends per appender
SUBSCRIBERS = 8
LOGS, LOG_APPENDERS, ENQUEUERS, STATE_CHANGERS = 2, 4, 4, 6
OTHER_NODE_INSTANCES = 3  # each: an EventLog appender and a state changer
EXPECTED = COUNT * (LOGS * LOG_APPENDERS + ENQUEUERS + STATE_CHANGERS + 2 * OTHER_NODE_INSTANCES)


@pytest.fixture
def url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_order_{os.getpid()}")


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(url)
    yield engine
    await engine.dispose()


async def subscriber(log: EventLog, done: asyncio.Event) -> list[int]:
    """Polls the log from its last cursor until everything is committed and read."""
    seen: list[int] = []
    cursor = 0
    while True:
        finished = done.is_set()  # taken before the read: that read then sees every commit
        batch = await log.read(TENANT, cursor, [], [], 100)
        seen += [event.cursor for event in batch]
        if batch:
            cursor = batch[-1].cursor
        elif finished:
            return seen
        else:
            await asyncio.sleep(0)


async def enqueue(messages: MessageRepository, instance_id: str) -> None:
    """New messages, each committed with its QUEUED event."""
    for n in range(COUNT):
        _, created = await messages.create(
            MessageRecord(
                tenant=TENANT,
                instance_id=instance_id,
                recipient_jid="5511940000000@s.whatsapp.net",
                kind="text",
                content={"text": str(n)},
            )
        )
        assert created


async def other_node(engine: AsyncEngine, ready: asyncio.Event) -> None:
    """A second process appending to the same database with its own engine."""
    instance_ids = [f"node2-{n}" for n in range(OTHER_NODE_INSTANCES)]
    url = engine.url.render_as_string(hide_password=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.event_appenders",
        url,
        TENANT,
        str(COUNT),
        *instance_ids,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None
    assert await process.stdout.readline() == b"ready\n"
    ready.set()
    await process.communicate(b"go\n")
    assert process.returncode == 0


async def test_every_subscriber_sees_every_event_once_in_cursor_order(
    engine: AsyncEngine,
) -> None:
    instances = InstanceRepository(engine)
    state_ids = [f"state-{n}" for n in range(STATE_CHANGERS)]
    node_ids = [f"node2-{n}" for n in range(OTHER_NODE_INSTANCES)]
    for instance_id in state_ids + node_ids:
        await instances.create(
            InstanceRecord(
                tenant=TENANT,
                id=instance_id,
                display_name=instance_id,
                phone="",
                state=ipb.INSTANCE_STATE_DISCONNECTED,
            )
        )
    logs = [EventLog(engine) for _ in range(LOGS)]
    messages = MessageRepository(engine, MessageEvents(logs[0]))

    done = asyncio.Event()
    readers = [asyncio.create_task(subscriber(logs[0], done)) for _ in range(SUBSCRIBERS)]
    node_ready = asyncio.Event()
    node = asyncio.create_task(other_node(engine, node_ready))
    await node_ready.wait()
    try:
        await asyncio.gather(
            node,
            *(
                log_appends(log, TENANT, f"log{k}-{n}", COUNT)
                for k, log in enumerate(logs)
                for n in range(LOG_APPENDERS)
            ),
            *(enqueue(messages, f"queue-{n}") for n in range(ENQUEUERS)),
            *(state_changes(engine, logs[1], TENANT, i, COUNT) for i in state_ids),
        )
    finally:
        done.set()
        seen = await asyncio.gather(*readers)
        messages.close()

    async with engine.connect() as conn:
        committed = list(
            (await conn.scalars(sa.select(events.c.cursor).order_by(events.c.cursor))).all()
        )
    assert len(committed) == EXPECTED
    for cursors in seen:
        assert cursors == committed  # each once, in order, none skipped
