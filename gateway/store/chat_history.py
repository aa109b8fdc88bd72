"""Writes of a history import into the per-chat store, in the caller's transaction: the
chats as WhatsApp describes them, and their past messages in bulk. A message already
stored (a repeated sync, or one received live) stays as it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.gateway.store.chats import ChatEntry, insert_for, message_row, touch_chat_in
from zapgate.gateway.store.schema import chat_messages, chats


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
    for fact in facts:
        insert = insert_for(conn, chats).values(
            tenant=tenant,
            instance_id=instance_id,
            jid=fact.jid,
            name=fact.name,
            last_us=0,
            last_seq=0,
            unread=fact.unread,
            archived=fact.archived,
            pinned=fact.pinned,
            muted_until_us=fact.muted_until_us,
        )
        new = insert.excluded
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=[chats.c.tenant, chats.c.instance_id, chats.c.jid],
                set_={
                    "name": sa.case((new.name != "", new.name), else_=chats.c.name),
                    "unread": new.unread,
                    "archived": new.archived,
                    "pinned": new.pinned,
                    "muted_until_us": new.muted_until_us,
                },
            )
        )


async def insert_history_in(
    conn: AsyncConnection, tenant: str, instance_id: str, entries: Sequence[ChatEntry], now: int
) -> int:
    """Inserts the messages not stored yet, moves each chat's newest activity; returns how
    many were new."""
    if not entries:
        return 0
    rows = [message_row(tenant, instance_id, entry, now) for entry in entries]
    result = await conn.execute(
        insert_for(conn, chat_messages)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(
            chat_messages.c.seq,
            chat_messages.c.chat_jid,
            chat_messages.c.sent_us,
            chat_messages.c.message_id,
        )
    )
    inserted = result.all()
    newest: dict[str, tuple[int, int, str]] = {}
    for seq, chat_jid, sent_us, message_id in inserted:
        if (sent_us, seq) > newest.get(chat_jid, (-1, -1, ""))[:2]:
            newest[chat_jid] = (sent_us, seq, message_id)
    by_id = {entry.message_id: entry for entry in entries}
    for _, seq, message_id in newest.values():
        await touch_chat_in(conn, tenant, instance_id, by_id[message_id], seq, unread=0)
    return len(inserted)
