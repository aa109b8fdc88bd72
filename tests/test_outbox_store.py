"""The outbox repository on SQLite and PostgreSQL: group commit, idempotency, transitions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.eventlog import EventLog
from zapgate.gateway.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.v1 import message_pb2

M = message_pb2.MessageState


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[MessageRepository]:
    engine: AsyncEngine = await open_database(database_url)
    await InstanceRepository(engine).create(InstanceRecord("acme", "shop", "Shop", "", 1))
    repository = MessageRepository(engine, MessageEvents(EventLog(engine)))
    yield repository
    repository.close()
    await engine.dispose()


def message(text: str, key: str | None = None) -> MessageRecord:
    return MessageRecord(
        "acme", "shop", "5511@s.whatsapp.net", "text", {"text": text}, idempotency_key=key
    )


async def test_concurrent_creates_share_commits_and_keep_order(repo: MessageRepository) -> None:
    results = await asyncio.gather(*(repo.create(message(f"m{n}")) for n in range(50)))
    seqs = [record.seq for record, created in results]
    assert all(created for _, created in results)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 50
    page = await repo.list_page("acme", "shop", state=None, before_seq=0, limit=100)
    assert [r.content["text"] for r in reversed(page)] == [f"m{n}" for n in range(50)]


async def test_one_idempotency_key_makes_one_message_even_in_one_batch(
    repo: MessageRepository,
) -> None:
    results = await asyncio.gather(
        *(repo.create(message("same", key="k-1")) for _ in range(10)),
        repo.create(message("other")),
    )
    ids = {record.id for record, _ in results[:10]}
    assert len(ids) == 1
    assert sum(created for _, created in results[:10]) == 1
    assert results[10][1]
    page = await repo.list_page("acme", "shop", state=None, before_seq=0, limit=100)
    assert len(page) == 2


async def test_transitions_only_move_from_the_given_states(repo: MessageRepository) -> None:
    record, _ = await repo.create(message("x"))
    assert not await repo.transition(
        "acme", "shop", record.id, M.MESSAGE_STATE_READ, from_states=[M.MESSAGE_STATE_SENT]
    )
    assert await repo.transition(
        "acme", "shop", record.id, M.MESSAGE_STATE_SENDING, from_states=[M.MESSAGE_STATE_QUEUED]
    )
    queued = await repo.recover()  # a crash while SENDING: never sent again
    assert queued == []
    after = await repo.get("acme", "shop", record.id)
    assert after is not None
    assert after.state == M.MESSAGE_STATE_DELIVERY_UNKNOWN
