"""SimulatorService.PreloadHistory's request as the blobs of a history sync (HistorySynced
events), cut as WhatsApp cuts them: a few chats and their messages per blob, newest messages
first, with the transfer's progress and the last blob marked final."""

from __future__ import annotations

import secrets

from zapgate.gateway.rpc.errors import FieldViolation
from zapgate.gateway.rpc.validation import check_phone, check_text, check_timestamp
from zapgate.sessions.events import HistoryChat, HistoryMessage, HistorySynced
from zapgate.v1 import simulator_pb2 as pb

DEFAULT_MESSAGES_PER_BLOB = 1000
MAX_TEXT = 4096


def violations(request: pb.PreloadHistoryRequest) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    if request.messages_per_blob < 0:
        found.append(FieldViolation("messages_per_blob", "must not be negative"))
    for n, conversation in enumerate(request.conversations):
        at = f"conversations[{n}]"
        chat = conversation.WhichOneof("chat")
        if chat is None:
            found.append(FieldViolation(f"{at}.chat", "give phone or group_jid"))
        elif chat == "phone":
            found += check_phone(f"{at}.phone", conversation.phone)
        elif not conversation.group_jid.endswith("@g.us"):
            found.append(FieldViolation(f"{at}.group_jid", "a group JID (...@g.us)"))
        found += check_text(f"{at}.name", conversation.name, 255)
        for m, entry in enumerate(conversation.messages):
            found += check_text(f"{at}.messages[{m}].text", entry.text, MAX_TEXT)
            found += check_timestamp(f"{at}.messages[{m}].sent_time", entry.sent_time)
            if entry.sender_phone:
                found += check_phone(f"{at}.messages[{m}].sender_phone", entry.sender_phone)
    return found


def blobs(key: str, request: pb.PreloadHistoryRequest) -> list[HistorySynced]:
    per_blob = request.messages_per_blob or DEFAULT_MESSAGES_PER_BLOB
    cut: list[tuple[list[HistoryChat], list[HistoryMessage]]] = [([], [])]
    for conversation in request.conversations:
        jid = conversation.group_jid or _user_jid(conversation.phone)
        if len(cut[-1][1]) >= per_blob:
            cut.append(([], []))
        chat = HistoryChat(
            jid=jid,
            name=conversation.name,
            unread=conversation.unread_count,
            archived=conversation.archived,
            pinned=conversation.pinned,
            muted_until=conversation.muted_until.ToMicroseconds() / 1e6,
        )
        cut[-1][0].append(chat)
        # Newest first, as WhatsApp sends a chat's past: the most recent arrives first.
        for entry in reversed(conversation.messages):
            if len(cut[-1][1]) >= per_blob:  # a long chat goes on in the next blob
                cut.append(([chat], []))
            cut[-1][1].append(_message(jid, conversation, entry))
    return [
        HistorySynced(
            key,
            sync_type="initial_bootstrap",
            chunk_order=order,
            progress=(order + 1) * 100 // len(cut),
            final=order == len(cut) - 1,
            chats=tuple(chats),
            messages=tuple(messages),
        )
        for order, (chats, messages) in enumerate(cut)
    ]


def _message(
    jid: str, conversation: pb.HistoryConversation, entry: pb.HistoryEntry
) -> HistoryMessage:
    if entry.from_me:
        sender = ""
    elif conversation.group_jid:
        sender = _user_jid(entry.sender_phone) if entry.sender_phone else ""
    else:
        sender = jid
    return HistoryMessage(
        message_id=entry.message_id or f"3A{secrets.token_hex(9).upper()}",
        chat_jid=jid,
        sender_jid=sender,
        from_me=entry.from_me,
        kind="text",
        timestamp=entry.sent_time.ToMicroseconds() / 1e6,
        text=entry.text,
        push_name=entry.push_name,
    )


def _user_jid(phone: str) -> str:
    return f"{phone.lstrip('+')}@s.whatsapp.net"
