"""neonize's HistorySync event (whatsmeow's events.HistorySync: the account's recent chats
and messages, sent to a newly linked device in blobs) as zapgate's HistorySynced.

Pure functions: no Go calls, no I/O. `Data` is a waHistorySync.HistorySync: `conversations`
(each a Conversation: ID, name, unreadCount, archived, pinned, muteEndTime and `messages`,
HistorySyncMsg wrapping a WebMessageInfo: key {remoteJID, fromMe, ID, participant},
messageTimestamp, pushName, message), `pushnames` (ID -> pushname), `syncType`,
`chunkOrder` and `progress`."""

from __future__ import annotations

import warnings
from typing import Any

from zapgate.sessions.events import HistoryChat, HistoryMessage, HistorySynced, InstanceKey
from zapgate.sessions.neonize_events import epoch_seconds
from zapgate.sessions.neonize_inbound import read_content

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto import Neonize_pb2 as pb  # type: ignore[import-untyped]
    from neonize.proto.waHistorySync import (  # type: ignore[import-untyped]
        WAWebProtobufsHistorySync_pb2 as wh,
    )

# The neonize event type the engine subscribes to for history syncs.
HISTORY_EVENT: Any = pb.HistorySync

# Kinds a chat's past shows as messages: edits, reactions and deletions of old messages
# come already applied (or not at all), and unknown kinds have nothing to show.
_SKIPPED = frozenset({"edit", "revoke", "reaction", "unknown"})
_SYNC_TYPES = {number: name.lower() for name, number in wh.HistorySync.HistorySyncType.items()}


def to_history_synced(key: InstanceKey, event: Any) -> HistorySynced:
    data = event.Data
    names = {bare(p.ID): str(p.pushname) for p in data.pushnames if p.pushname}
    chats: list[HistoryChat] = []
    messages: list[HistoryMessage] = []
    for conversation in data.conversations:
        jid = bare(conversation.ID)
        if not jid:
            continue
        name = str(conversation.name or conversation.displayName)
        if not name and not jid.endswith("@g.us"):
            name = names.get(jid, "")
        mute = int(conversation.muteEndTime)
        chats.append(
            HistoryChat(
                jid=jid,
                name=name,
                unread=int(conversation.unreadCount),
                archived=bool(conversation.archived),
                pinned=bool(conversation.pinned),
                muted_until=epoch_seconds(mute) if mute > 0 else 0.0,
            )
        )
        for entry in conversation.messages:
            message = _message(jid, entry.message, names)
            if message is not None:
                messages.append(message)
    return HistorySynced(
        key,
        sync_type=_SYNC_TYPES.get(int(data.syncType), "unknown"),
        chunk_order=int(data.chunkOrder),
        progress=int(data.progress),
        final=int(data.progress) >= 100,
        chats=tuple(chats),
        messages=tuple(messages),
    )


def _message(chat_jid: str, info: Any, names: dict[str, str]) -> HistoryMessage | None:
    content = read_content(info.message) if info.HasField("message") else None
    if content is None or content.get("kind") in _SKIPPED:
        return None
    from_me = bool(info.key.fromMe)
    if chat_jid.endswith("@g.us"):
        sender = bare(info.key.participant or info.participant)
    else:
        sender = "" if from_me else chat_jid
    return HistoryMessage(
        message_id=str(info.key.ID),
        chat_jid=chat_jid,
        sender_jid=sender,
        from_me=from_me,
        kind=str(content["kind"]),
        timestamp=epoch_seconds(int(info.messageTimestamp)),
        text=str(
            content.get("text") or content.get("location_name") or content.get("contact_name") or ""
        ),
        push_name=str(info.pushName) or names.get(sender, ""),
        media_mime_type=str(content.get("media_mime_type", "")),
        media_file_name=str(content.get("media_file_name", "")),
        media_size=int(content.get("media_size", 0)),
        media_ref=str(content.get("media_ref", "")),
    )


def bare(jid: str) -> str:
    """`user@server` without a device part (`user:device@server`)."""
    user, at, server = str(jid).partition("@")
    return f"{user.split(':')[0]}@{server}" if at and user else ""
