"""Writes of a history import into the per-chat store, in the caller's transaction: the
chats as WhatsApp describes them, and their past messages in bulk. A message already
stored (a repeated sync, or one received live) stays as it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.gateway.store.chats import ChatEntry, insert_for, message_row, touch_chats_in
from zapgate.gateway.store.schema import chat_messages, chats, received_media


@dataclass(frozen=True)
class ChatFacts:
    """What a history sync says of a chat."""

    jid: str
    name: str
    unread: int
    archived: bool
    pinned: bool
    muted_until_us: int


async def describe_chats_in(
    conn: AsyncConnection, tenant: str, instance_id: str, facts: Sequence[ChatFacts]
) -> None:
    """Creates the chats (with no activity yet) or sets what WhatsApp reports of them."""
    if not facts:
        return
    insert = insert_for(conn, chats)
    new = insert.excluded
    statement = insert.on_conflict_do_update(
        index_elements=[chats.c.tenant, chats.c.instance_id, chats.c.jid],
        set_={
            "name": sa.case((new.name != "", new.name), else_=chats.c.name),
            "unread": new.unread,
            "archived": new.archived,
            "pinned": new.pinned,
            "muted_until_us": new.muted_until_us,
        },
    )
    rows = [
        {
            "tenant": tenant,
            "instance_id": instance_id,
            "jid": fact.jid,
            "name": fact.name,
            "last_us": 0,
            "last_seq": 0,
            "unread": fact.unread,
            "archived": fact.archived,
            "pinned": fact.pinned,
            "muted_until_us": fact.muted_until_us,
        }
        for fact in facts
    ]
    await conn.execute(statement, rows)


Stored = tuple[int, int, str]  # (sent_us, seq, WhatsApp id) of a message just stored


async def insert_history_in(
    conn: AsyncConnection, tenant: str, instance_id: str, entries: Sequence[ChatEntry], now: int
) -> tuple[int, dict[str, Stored]]:
    """Inserts the messages not stored yet; returns how many, and per chat the newest one
    inserted."""
    if not entries:
        return 0, {}
    rows = [message_row(tenant, instance_id, entry, now) for entry in entries]
    result = await conn.execute(
        insert_for(conn, chat_messages)
        .on_conflict_do_nothing()
        .returning(
            chat_messages.c.seq,
            chat_messages.c.chat_jid,
            chat_messages.c.sent_us,
            chat_messages.c.message_id,
        ),
        rows,
    )
    newest: dict[str, Stored] = {}
    count = 0
    for seq, chat_jid, sent_us, message_id in result:
        count += 1
        if (sent_us, seq) > newest.get(chat_jid, (-1, -1, ""))[:2]:
            newest[chat_jid] = (sent_us, seq, message_id)
    return count, newest


async def touch_newest_in(
    conn: AsyncConnection,
    tenant: str,
    instance_id: str,
    newest: dict[str, Stored],
    entries: dict[str, ChatEntry],
) -> None:
    """Each chat's newest activity moved to its newest imported message (`entries` by id)."""
    await touch_chats_in(
        conn,
        tenant,
        instance_id,
        [(entries[message_id], seq) for _, seq, message_id in newest.values()],
        unread=0,
    )


async def remember_media_in(
    conn: AsyncConnection, tenant: str, instance_id: str, media: Sequence[MediaRow], now: int
) -> None:
    """Where each imported message's media can be fetched from (DownloadMedia), as the
    inbox records it for live messages; a location already known stays."""
    if not media:
        return
    rows = [
        {
            "tenant": tenant,
            "instance_id": instance_id,
            "message_id": m.message_id,
            "media_ref": m.media_ref,
            "mime_type": m.mime_type,
            "file_name": m.file_name,
            "size": m.size,
            "received_us": now,
        }
        for m in media
    ]
    await conn.execute(insert_for(conn, received_media).on_conflict_do_nothing(), rows)


@dataclass(frozen=True)
class MediaRow:
    message_id: str
    media_ref: str
    mime_type: str
    file_name: str
    size: int
