"""The per-chat store: every chat of an instance and its messages of both directions (its
writes; reads are in store/chat_reads.py).

Nothing writes here on its own: `record_in` and `marked_read_in` run inside the transaction
of the message's own event (the inbox's MessageReceived, the outbox's MessageStateChanged),
so a chat never shows a message its event log lacks, or the other way round. A chat's row
(newest activity, preview, unread count) is updated by the same statement batch as the
message that changes it.

Edits, deletions for everyone and reactions act on the message they name: an edit keeps the
previous text in `edits`, a deletion marks the message (its text stays: the store is the
account's own record), a reaction is kept per sender."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.gateway.store.contacts import fold
from zapgate.gateway.store.schema import chat_messages, chats

ACTIONS = ("edit", "revoke", "reaction")
GROUP_SERVER = "@g.us"
PREVIEW_CHARS = 100
REVOKED_PREVIEW = "[deleted]"
# A reaction of the instance's own account is kept under this key (its JID may be unknown).
OWN_REACTION = "me"


@dataclass(frozen=True)
class ChatEntry:
    """A message to record in its chat, or an edit, deletion or reaction acting on an
    earlier one (`target_message_id`)."""

    message_id: str  # WhatsApp's
    chat_jid: str
    sender_jid: str
    from_me: bool
    kind: str
    sent_us: int
    text: str = ""
    push_name: str = ""
    media_mime_type: str = ""
    media_file_name: str = ""
    target_message_id: str = ""  # edit, revoke, reaction
    emoji: str = ""  # reaction; empty: removed
    outbox_id: str = ""  # own messages sent through the gateway
    state: int = 0  # own messages: MessageState
    from_history: bool = False


def preview(kind: str, text: str) -> str:
    return text[:PREVIEW_CHARS] if text else f"[{kind}]"


def insert_for(conn: AsyncConnection, table: sa.Table) -> Any:
    """INSERT in the connection's dialect (for ON CONFLICT)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def whole_seconds(micros: int) -> int:
    """WhatsApp stamps messages in whole seconds, both ways; an engine's finer clock (one
    direction only) would order a chat's messages of one second by clock, not by arrival.
    Messages of one second keep the order they were stored in instead."""
    return micros - micros % 1_000_000


def message_row(tenant: str, instance_id: str, entry: ChatEntry, now: int) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "instance_id": instance_id,
        "chat_jid": entry.chat_jid,
        "message_id": entry.message_id,
        "outbox_id": entry.outbox_id,
        "sender_jid": entry.sender_jid,
        "push_name": entry.push_name,
        "from_me": entry.from_me,
        "kind": entry.kind,
        "text": entry.text,
        "search_text": fold(entry.text),
        "media_mime_type": entry.media_mime_type,
        "media_file_name": entry.media_file_name,
        "sent_us": whole_seconds(entry.sent_us),
        "stored_us": now,
        "state": entry.state,
        "read_us": 0,
        "edits": None,
        "revoked_us": 0,
        "reactions": None,
        "from_history": entry.from_history,
    }


async def record_in(
    conn: AsyncConnection, tenant: str, instance_id: str, entry: ChatEntry, now: int
) -> None:
    """Records `entry` in `conn`'s transaction. A message already stored (a redelivery, a
    repeated history sync) stays as it is."""
    if entry.kind in ACTIONS:
        await _act(conn, tenant, instance_id, entry, now)
        return
    seq = await conn.scalar(
        insert_for(conn, chat_messages)
        .values(message_row(tenant, instance_id, entry, now))
        .on_conflict_do_nothing()
        .returning(chat_messages.c.seq)
    )
    if seq is not None:
        unread = 0 if entry.from_me or entry.from_history else 1
        await touch_chat_in(conn, tenant, instance_id, entry, int(seq), unread=unread)


async def touch_chat_in(
    conn: AsyncConnection,
    tenant: str,
    instance_id: str,
    entry: ChatEntry,
    seq: int,
    *,
    unread: int,
) -> None:
    """Creates the chat or moves its newest activity to `entry`, stored as `seq` (if newer),
    adding `unread`."""
    await touch_chats_in(conn, tenant, instance_id, [(entry, seq)], unread=unread)


async def touch_chats_in(
    conn: AsyncConnection,
    tenant: str,
    instance_id: str,
    newest: Sequence[tuple[ChatEntry, int]],
    *,
    unread: int,
) -> None:
    """touch_chat_in for many chats at once (one statement, many parameter sets)."""
    if not newest:
        return
    rows = [
        {
            "tenant": tenant,
            "instance_id": instance_id,
            "jid": entry.chat_jid,
            "name": _name(entry),
            "last_us": whole_seconds(entry.sent_us),
            "last_seq": seq,
            "last_message_id": entry.message_id,
            "last_preview": preview(entry.kind, entry.text),
            "last_from_me": entry.from_me,
            "unread": unread,
        }
        for entry, seq in newest
    ]
    await conn.execute(_touch_statement(conn), rows)


def _name(entry: ChatEntry) -> str:
    """A direct chat is named after the other side's push name."""
    if entry.from_me or entry.chat_jid.endswith(GROUP_SERVER):
        return ""
    return entry.push_name


_TOUCH: dict[str, Any] = {}


def _touch_statement(conn: AsyncConnection) -> Any:
    dialect = conn.dialect.name
    statement = _TOUCH.get(dialect)
    if statement is None:
        insert = insert_for(conn, chats)
        new = insert.excluded
        newer = sa.tuple_(new.last_us, new.last_seq) > sa.tuple_(chats.c.last_us, chats.c.last_seq)

        def if_newer(column: str) -> Any:
            return sa.case((newer, new[column]), else_=chats.c[column])

        statement = _TOUCH[dialect] = insert.on_conflict_do_update(
            index_elements=[chats.c.tenant, chats.c.instance_id, chats.c.jid],
            set_={
                "name": sa.case((new.name != "", new.name), else_=chats.c.name),
                "last_us": if_newer("last_us"),
                "last_seq": if_newer("last_seq"),
                "last_message_id": if_newer("last_message_id"),
                "last_preview": if_newer("last_preview"),
                "last_from_me": if_newer("last_from_me"),
                "unread": chats.c.unread + new.unread,
            },
        )
    return statement


async def _act(
    conn: AsyncConnection, tenant: str, instance_id: str, entry: ChatEntry, now: int
) -> None:
    """Applies an edit, a deletion or a reaction to the message it names (one the store
    does not hold, e.g. older than the history imported, is left alone)."""
    where = (
        chat_messages.c.tenant == tenant,
        chat_messages.c.instance_id == instance_id,
        chat_messages.c.message_id == entry.target_message_id,
    )
    target = (
        await conn.execute(
            sa.select(
                chat_messages.c.chat_jid,
                chat_messages.c.kind,
                chat_messages.c.text,
                chat_messages.c.edits,
                chat_messages.c.reactions,
            ).where(*where)
        )
    ).first()
    if target is None:
        return
    at = entry.sent_us or now
    values: dict[str, Any]
    if entry.kind == "edit":
        edits = [*(target.edits or []), {"text": target.text, "time_us": at}]
        values = {"text": entry.text, "search_text": fold(entry.text), "edits": edits}
        shown = preview(target.kind, entry.text)
    elif entry.kind == "revoke":
        values, shown = {"revoked_us": at}, REVOKED_PREVIEW
    else:
        reactions = dict(target.reactions or {})
        who = OWN_REACTION if entry.from_me else entry.sender_jid
        if entry.emoji:
            reactions[who] = entry.emoji
        else:
            reactions.pop(who, None)
        values, shown = {"reactions": reactions or None}, ""
    await conn.execute(sa.update(chat_messages).where(*where).values(**values))
    if shown:  # the chat's preview follows its newest message
        await conn.execute(
            sa.update(chats)
            .where(
                chats.c.tenant == tenant,
                chats.c.instance_id == instance_id,
                chats.c.jid == target.chat_jid,
                chats.c.last_message_id == entry.target_message_id,
            )
            .values(last_preview=shown)
        )


async def set_state_in(
    conn: AsyncConnection, tenant: str, instance_id: str, outbox_ids: Sequence[str], state: int
) -> None:
    """An own message's receipts (DELIVERED, READ) as the outbox records them."""
    await conn.execute(
        sa.update(chat_messages)
        .where(
            chat_messages.c.tenant == tenant,
            chat_messages.c.instance_id == instance_id,
            chat_messages.c.outbox_id.in_(list(outbox_ids)),
        )
        .values(state=state)
    )


async def marked_read_in(
    conn: AsyncConnection, tenant: str, instance_id: str, message_ids: Sequence[str], now: int
) -> int:
    """Received messages the instance marked read (here, or on another device of the
    account): each chat's unread count drops by the ones that were unread. Returns how many
    were."""
    result = await conn.execute(
        sa.update(chat_messages)
        .where(
            chat_messages.c.tenant == tenant,
            chat_messages.c.instance_id == instance_id,
            chat_messages.c.message_id.in_(list(message_ids)),
            chat_messages.c.read_us == 0,
            chat_messages.c.from_me == sa.false(),
        )
        .values(read_us=now)
        .returning(chat_messages.c.chat_jid)
    )
    per_chat: dict[str, int] = {}
    for (chat_jid,) in result:
        per_chat[chat_jid] = per_chat.get(chat_jid, 0) + 1
    for chat_jid, count in per_chat.items():
        await conn.execute(
            sa.update(chats)
            .where(
                chats.c.tenant == tenant,
                chats.c.instance_id == instance_id,
                chats.c.jid == chat_jid,
            )
            .values(unread=sa.case((chats.c.unread > count, chats.c.unread - count), else_=0))
        )
    return sum(per_chat.values())
