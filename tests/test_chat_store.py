"""The per-chat store on SQLite and PostgreSQL: messages of both directions, the outbox's
own messages mirrored with their state in the transaction of their events, actions applied,
unread counts, paging and search, a repeated message stored once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.chat_reads import ChatStore
from zapgate.gateway.store.chat_retention import DAY_US, ChatRetention
from zapgate.gateway.store.chat_settings import ChatSettings, ChatSettingsRepository
from zapgate.gateway.store.chats import ChatEntry, marked_read_in, record_in
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.schema import chat_messages, received_media, received_messages
from zapgate.v1 import message_pb2

M = message_pb2.MessageState
CHAT = "5511970000001@s.whatsapp.net"
SECOND = 1_000_000
NEW_AT = 10 * 86_400  # seconds


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    await InstanceRepository(engine).create(InstanceRecord("acme", "shop", "Shop", "", 1))
    yield engine
    await engine.dispose()


def theirs(message_id: str, text: str, at: int, **fields: object) -> ChatEntry:
    return ChatEntry(
        message_id=message_id,
        chat_jid=CHAT,
        sender_jid=CHAT,
        from_me=False,
        kind="text",
        sent_us=at * SECOND,
        text=text,
        push_name="Ana",
        **fields,  # type: ignore[arg-type]
    )


async def record(engine: AsyncEngine, *entries: ChatEntry, tenant: str = "acme") -> None:
    async with engine.begin() as conn:
        for entry in entries:
            await record_in(conn, tenant, "shop", entry, 0)


async def test_messages_actions_and_unread_counts(engine: AsyncEngine) -> None:
    store = ChatStore(engine)
    await record(engine, theirs("A", "olá", 100), theirs("B", "tudo bem?", 101))
    await record(engine, theirs("A", "olá again", 100))  # a redelivery changes nothing
    chat = await store.chat("acme", "shop", CHAT)
    assert chat is not None
    assert (chat.name, chat.unread, chat.last_message_id, chat.last_preview) == (
        "Ana",
        2,
        "B",
        "tudo bem?",
    )
    edit = ChatEntry(
        "E", CHAT, CHAT, False, "edit", 102 * SECOND, "tudo bem??", target_message_id="B"
    )
    like = ChatEntry(
        "R", CHAT, CHAT, False, "reaction", 103 * SECOND, target_message_id="A", emoji="👍"
    )
    await record(engine, edit, like)
    stored = await store.message("acme", "shop", "B")
    assert stored is not None
    assert (stored.text, [e.text for e in stored.edits]) == ("tudo bem??", ["tudo bem?"])
    assert (await store.chat("acme", "shop", CHAT)).last_preview == "tudo bem??"  # type: ignore[union-attr]
    a = await store.message("acme", "shop", "A")
    assert a is not None
    assert a.reactions == {CHAT: "👍"}
    async with engine.begin() as conn:
        await marked_read_in(conn, "acme", "shop", ["A", "nope"], 5)
    assert (await store.chat("acme", "shop", CHAT)).unread == 1  # type: ignore[union-attr]
    assert await store.newest_unread("acme", "shop", CHAT) == "B"
    await store.clear_unread("acme", "shop", CHAT)
    assert (await store.chat("acme", "shop", CHAT)).unread == 0  # type: ignore[union-attr]
    assert await store.newest_unread("acme", "shop", CHAT) == ""
    # Another tenant's rows are apart, whatever their ids.
    await record(engine, theirs("A", "other tenant", 100), tenant="globex")
    assert (await store.message("acme", "shop", "A")).text == "olá"  # type: ignore[union-attr]
    assert await store.search("globex", "shop", "ola", chat_jid="", after=None, limit=10) == []


async def test_own_messages_enter_their_chat_when_sent_with_their_receipts(
    engine: AsyncEngine,
) -> None:
    repo = MessageRepository(engine, MessageEvents(EventLog(engine)))
    store = ChatStore(engine)
    try:
        record_, _ = await repo.create(
            MessageRecord("acme", "shop", CHAT, "text", {"text": "oi {name}", "variables": {}})
        )
        assert await store.chats_page("acme", "shop", after=None, limit=10) == []  # queued
        await repo.transition("acme", "shop", record_.id, M.MESSAGE_STATE_SENDING, from_states=[1])
        await repo.transition(
            "acme",
            "shop",
            record_.id,
            M.MESSAGE_STATE_SENT,
            from_states=[M.MESSAGE_STATE_SENDING],
            whatsapp_message_id="3EB0OWN",
            sent_time_us=200 * SECOND + 123,
            content={"text": "oi {name}", "sent_text": "oi Ana"},
        )
        own = await store.message("acme", "shop", "3EB0OWN")
        assert own is not None
        assert (own.text, own.state, own.outbox_id, own.from_me) == (
            "oi Ana",
            M.MESSAGE_STATE_SENT,
            record_.id,
            True,
        )
        assert own.sent_us == 200 * SECOND  # whole seconds, as WhatsApp's
        await repo.advance_by_whatsapp_ids(
            "acme", "shop", ["3EB0OWN"], M.MESSAGE_STATE_READ, [M.MESSAGE_STATE_SENT]
        )
        assert (await store.message("acme", "shop", "3EB0OWN")).state == M.MESSAGE_STATE_READ  # type: ignore[union-attr]
        [chat] = await store.chats_page("acme", "shop", after=None, limit=10)
        assert (chat.unread, chat.last_from_me, chat.name) == (0, True, "")
    finally:
        repo.close()


async def test_pages_both_ways_and_search(engine: AsyncEngine) -> None:
    store = ChatStore(engine)
    # Ten messages over five seconds: ties within a second keep their storage order.
    await record(engine, *(theirs(f"m{n}", f"Mensagem nº{n}", 300 + n // 2) for n in range(10)))
    older, after, seen = [], (2**63 - 1, 2**63 - 1), 0
    while page := await store.messages_page(
        "acme", "shop", CHAT, after=after, newer=False, limit=4
    ):
        older += [m.message_id for m in page]
        after, seen = (page[-1].sent_us, page[-1].seq), seen + 1
    assert older == [f"m{n}" for n in reversed(range(10))]
    assert seen == 3
    newer = await store.messages_page(
        "acme", "shop", CHAT, after=(301 * SECOND, 0), newer=True, limit=3
    )
    assert [m.message_id for m in newer] == ["m2", "m3", "m4"]
    found = await store.search("acme", "shop", "MENSAGEM NO5", chat_jid=CHAT, after=None, limit=5)
    assert [m.message_id for m in found] == ["m5"]
    async with engine.connect() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(chat_messages))
    assert count == 10


async def received(engine: AsyncEngine, tenant: str, message_id: str, at: int) -> None:
    """What the inbox keeps of a received message apart from the chats: its quote and its
    media reference."""
    key = {"tenant": tenant, "instance_id": "shop", "message_id": message_id}
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(received_messages).values(
                **key,
                chat_jid=CHAT,
                sender_jid=CHAT,
                from_me=False,
                kind="image",
                text="",
                sent_us=at * SECOND,
                read_us=0,
                received_us=at * SECOND,
            )
        )
        await conn.execute(
            sa.insert(received_media).values(
                **key,
                media_ref="ref",
                mime_type="image/jpeg",
                file_name="",
                size=1,
                received_us=at * SECOND,
            )
        )


async def kept(engine: AsyncEngine, table: sa.Table, tenant: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(table.c.message_id).where(table.c.tenant == tenant))
    return sorted(row[0] for row in rows)


async def test_retention_trims_one_instance_only(engine: AsyncEngine) -> None:
    await record(engine, theirs("old", "velho", 100), theirs("new", "novo", NEW_AT))
    await record(engine, theirs("old", "velho", 100), tenant="globex")
    for tenant, message_id, at in (("acme", "old", 100), ("acme", "new", NEW_AT)):
        await received(engine, tenant, message_id, at)
    await received(engine, "globex", "old", 100)
    settings = ChatSettingsRepository(engine)
    await settings.put("acme", "shop", ChatSettings(retention_days=1))
    retention = ChatRetention(engine, settings, clock=lambda: NEW_AT * SECOND + DAY_US // 2)
    assert await retention.enforce() == 1
    store = ChatStore(engine)
    assert await store.message("acme", "shop", "old") is None
    assert await store.message("acme", "shop", "new") is not None
    assert await store.message("globex", "shop", "old") is not None  # no retention there
    for table in (received_messages, received_media):  # nothing outlives its chat entry
        assert await kept(engine, table, "acme") == ["new"]
        assert await kept(engine, table, "globex") == ["old"]
    await settings.put("acme", "shop", ChatSettings(retention_days=1))
    later = ChatRetention(engine, settings, clock=lambda: NEW_AT * SECOND + 2 * DAY_US)
    assert await later.enforce() == 1
    assert await store.chat("acme", "shop", CHAT) is None  # emptied: gone
