"""Single-node gateways pay nothing for fencing: owner-only writes without a lease token run
exactly the statements they ran before cluster mode existed (none reads a lease), and so do
a webhook's delivery writes (none names a webhook lease)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.gateway.store.webhooks import DISABLED, Failure, WebhookRecord, WebhookRepository
from zapgate.gateway.webhooks.signing_secret import generate_secret, seal_secret
from zapgate.sessions.vault import Keyring, MasterKey, seal
from zapgate.v1 import event_pb2, instance_pb2, message_pb2

S = instance_pb2.InstanceState
M = message_pb2.MessageState


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    await InstanceRepository(engine).create(InstanceRecord("acme", "a", "a", "", 1))
    yield engine
    await engine.dispose()


def recorded(engine: AsyncEngine) -> list[str]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    return statements


async def test_writes_without_a_lease_token_never_read_a_lease(engine: AsyncEngine) -> None:
    events = EventLog(engine)
    messages = MessageRepository(engine, MessageEvents(events))
    try:
        stored, _ = await messages.create(
            MessageRecord("acme", "a", "5511@s.whatsapp.net", "text", {"text": "hi"})
        )
        statements = recorded(engine)
        row = events.row("acme", "a", event_pb2.StateChanged(state=S.INSTANCE_STATE_CONNECTED))
        await InstanceRepository(engine).update(
            "acme", "a", {"state": S.INSTANCE_STATE_CONNECTED}, events=[row]
        )
        await SnapshotRepository(engine).save(
            "acme", "a", seal(MasterKey.generate(), "acme/a", 1, b"session")
        )
        moved = await messages.transition(
            "acme", "a", stored.id, M.MESSAGE_STATE_SENDING, from_states=[M.MESSAGE_STATE_QUEUED]
        )
        assert moved is not None
        assert statements  # the writes ran...
        assert not [s for s in statements if "instance_leases" in s]  # ...and no fence
    finally:
        messages.close()


async def test_webhook_delivery_writes_without_a_lease_name_no_lease(engine: AsyncEngine) -> None:
    keyring = Keyring(MasterKey.generate())
    webhooks = WebhookRepository(engine)
    secret = seal_secret(keyring, "acme", "wh_a", generate_secret())
    await webhooks.create(WebhookRecord("acme", "wh_a", "http://127.0.0.1:9/hook", secret))
    statements = recorded(engine)
    assert await webhooks.delivered("acme", "wh_a", 1)
    assert await webhooks.failed("acme", "wh_a", Failure("timed out", 1, 0, 0))
    row = EventLog(engine).row("acme", "", event_pb2.WebhookStatusChanged(webhook_id="wh_a"))
    assert await webhooks.stop("acme", "wh_a", DISABLED, "410 Gone", row)
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 3  # one statement per write, as before
    assert not [s for s in statements if "lease" in s or "owner_node" in s]
