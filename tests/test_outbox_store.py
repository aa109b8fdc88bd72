"""The outbox repository on SQLite and PostgreSQL: group commit, idempotency, transitions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.schema import events
from zapgate.v1 import event_pb2, message_pb2

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
    assert after.failure_reason == "gateway_stopped"  # a stable code, the words apart
    assert after.failure_detail == "the gateway stopped while handing it to WhatsApp"


class FailingJournal(MessageEvents):
    """A journal whose event rows cannot be inserted (a payload is required)."""

    def row(
        self, message: MessageRecord, receipt_from: tuple[str, str] = ("", "")
    ) -> dict[str, object]:
        return {**super().row(message, receipt_from), "payload": None}


async def events_of(engine: AsyncEngine) -> list[event_pb2.Event]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(events.c.payload).order_by(events.c.cursor))
        return [event_pb2.Event.FromString(bytes(row[0])) for row in rows]


async def test_a_state_change_and_its_event_commit_together(database_url: str) -> None:
    engine = await open_database(database_url)
    try:
        await InstanceRepository(engine).create(InstanceRecord("acme", "shop", "Shop", "", 1))
        good = MessageRepository(engine, MessageEvents(EventLog(engine)))
        record, _ = await good.create(message("x"))
        await good.transition(
            "acme", "shop", record.id, M.MESSAGE_STATE_SENDING, from_states=[M.MESSAGE_STATE_QUEUED]
        )
        await good.recover()  # SENDING at a start: DELIVERY_UNKNOWN, with its event
        changes = [e.message_state_changed for e in await events_of(engine)]
        assert [change.state for change in changes] == [
            M.MESSAGE_STATE_QUEUED,
            M.MESSAGE_STATE_SENDING,
            M.MESSAGE_STATE_DELIVERY_UNKNOWN,
        ]
        assert changes[-1].failure_reason == "gateway_stopped"
        assert changes[-1].failure_detail == "the gateway stopped while handing it to WhatsApp"

        second, _ = await good.create(message("y"))
        broken = MessageRepository(engine, FailingJournal(EventLog(engine)))
        with pytest.raises(sa.exc.SQLAlchemyError):
            await broken.transition(
                "acme",
                "shop",
                second.id,
                M.MESSAGE_STATE_CANCELLED,
                from_states=[M.MESSAGE_STATE_QUEUED],
            )
        # The event could not be written, so the state did not change either.
        after = await good.get("acme", "shop", second.id)
        assert after is not None
        assert after.state == M.MESSAGE_STATE_QUEUED
        broken.close()
        good.close()
    finally:
        await engine.dispose()


async def test_receipts_move_only_their_own_instances_messages(database_url: str) -> None:
    engine = await open_database(database_url)
    try:
        instances = InstanceRepository(engine)
        repo = MessageRepository(engine, MessageEvents(EventLog(engine)))
        ids = {}
        for tenant in ("alpha", "beta"):
            await instances.create(InstanceRecord(tenant, "shop", "Shop", "", 1))
            record, _ = await repo.create(
                MessageRecord(tenant, "shop", "5511999990000@s.whatsapp.net", "text", {})
            )
            await repo.transition(
                tenant,
                "shop",
                record.id,
                M.MESSAGE_STATE_SENT,
                from_states=[M.MESSAGE_STATE_QUEUED],
                whatsapp_message_id="3EB0SAME",
            )
            ids[tenant] = record.id
        moved = await repo.advance_by_whatsapp_ids(
            "beta", "shop", ["3EB0SAME"], M.MESSAGE_STATE_READ, [M.MESSAGE_STATE_SENT]
        )
        assert [(left, m.tenant, m.id) for left, m in moved] == [
            (M.MESSAGE_STATE_SENT, "beta", ids["beta"])
        ]
        alpha = await repo.get("alpha", "shop", ids["alpha"])
        assert alpha is not None
        assert alpha.state == M.MESSAGE_STATE_SENT
        repo.close()
    finally:
        await engine.dispose()
