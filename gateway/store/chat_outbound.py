"""The instance's own messages in their chats: the outbox mirrors a message into the chat
store in the transaction that moves its state (and appends its event). A message enters
its chat once handed to WhatsApp (SENT, or DELIVERY_UNKNOWN: it may have gone out); queued,
failed, cancelled and expired ones live in the outbox only. A sent reaction, edit or
revoke acts on the message it names, as a received one does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.gateway.store.chats import ACTIONS, ChatEntry, record_in, set_state_in
from zapgate.v1 import message_pb2

if TYPE_CHECKING:
    from zapgate.gateway.store.messages import MessageRecord

M = message_pb2.MessageState
ENTERS_CHAT = (M.MESSAGE_STATE_SENT, M.MESSAGE_STATE_DELIVERY_UNKNOWN)
RECEIPTS = (M.MESSAGE_STATE_DELIVERED, M.MESSAGE_STATE_READ)


def chat_entry(record: MessageRecord) -> ChatEntry:
    content: dict[str, Any] = dict(record.content)
    sent_us = record.sent_time_us or record.update_time_us
    if record.kind in ACTIONS:
        target = content.get("target") or {}
        return ChatEntry(
            message_id=record.whatsapp_message_id or record.id,
            chat_jid=record.recipient_jid,
            sender_jid="",
            from_me=True,
            kind=record.kind,
            sent_us=sent_us,
            text=str(content.get("edit_text", "")),
            target_message_id=str(target.get("message_id", "")),
            emoji=str(content.get("emoji", "")),
        )
    text = (
        content.get("sent_text")
        or content.get("text")
        or content.get("caption")
        or content.get("location_name")
        or content.get("contact_name")
        or ""
    )
    return ChatEntry(
        message_id=record.whatsapp_message_id or record.id,
        chat_jid=record.recipient_jid,
        sender_jid="",
        from_me=True,
        kind=record.kind,
        sent_us=sent_us,
        text=str(text),
        media_mime_type=str(content.get("mime_type", "")),
        media_file_name=str(content.get("file_name", "")),
        outbox_id=record.id,
        state=record.state,
    )


async def mirror_in(conn: AsyncConnection, moved: Sequence[MessageRecord], now: int) -> None:
    """Mirrors messages whose state just moved, in `conn`'s transaction."""
    receipts: dict[tuple[str, str, int], list[str]] = {}
    for record in moved:
        if record.state in ENTERS_CHAT:
            if record.kind in ACTIONS and record.state != M.MESSAGE_STATE_SENT:
                continue  # an action that may not have happened changes nothing
            await record_in(conn, record.tenant, record.instance_id, chat_entry(record), now)
        elif record.state in RECEIPTS and record.kind not in ACTIONS:
            key = (record.tenant, record.instance_id, record.state)
            receipts.setdefault(key, []).append(record.id)
    for (tenant, instance_id, state), ids in receipts.items():
        await set_state_in(conn, tenant, instance_id, ids, state)
