"""Evolution API v2-compatible webhook bodies, for clients migrating from Evolution: its
event names and its envelope `{event, instance, data, destination, date_time, sender,
server_url, apikey}`, with `data` shaped like Baileys' messages as Evolution forwards them.
Events with no Evolution equivalent give None (the webhook skips them). The mapping table
is in docs/webhooks.md. Checked against EvolutionAPI/evolution-api (commit 3454bec7):
src/api/integrations/event/webhook/webhook.controller.ts (the envelope) and
src/api/integrations/channel/whatsapp/whatsapp.baileys.service.ts (`sendDataWebhook` calls,
`prepareMessage`). JSON drops Evolution's `undefined` fields: so do these bodies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zapgate.v1 import event_pb2, instance_pb2, message_pb2

S = instance_pb2.InstanceState
M = message_pb2.MessageState
K = event_pb2.MediaKind
G = event_pb2.GroupChange

CONNECTION_STATES = {
    S.INSTANCE_STATE_CONNECTED: "open",
    S.INSTANCE_STATE_CONNECTING: "connecting",
    S.INSTANCE_STATE_PAIRING: "connecting",
}
# Baileys' DisconnectReason codes, as Evolution reports them in `statusReason`.
STATUS_REASONS = {
    S.INSTANCE_STATE_CONNECTED: 200,
    S.INSTANCE_STATE_LOGGED_OUT: 401,
    S.INSTANCE_STATE_BANNED: 403,
}
# Message states with an Evolution `messages.update` status (Baileys' WAMessageStatus).
UPDATE_STATUSES = {
    M.MESSAGE_STATE_DELIVERED: "DELIVERY_ACK",
    M.MESSAGE_STATE_READ: "READ",
    M.MESSAGE_STATE_FAILED: "ERROR",
}
MEDIA_TYPES = {
    K.MEDIA_KIND_IMAGE: "imageMessage",
    K.MEDIA_KIND_VIDEO: "videoMessage",
    K.MEDIA_KIND_AUDIO: "audioMessage",
    K.MEDIA_KIND_VOICE_NOTE: "audioMessage",
    K.MEDIA_KIND_DOCUMENT: "documentMessage",
    K.MEDIA_KIND_STICKER: "stickerMessage",
}
# Baileys' ParticipantAction for each participants change; this account joining or leaving
# is the same event with its own JID, as Baileys emits it.
PARTICIPANT_ACTIONS = {
    G.GROUP_CHANGE_PARTICIPANTS_ADDED: "add",
    G.GROUP_CHANGE_PARTICIPANTS_REMOVED: "remove",
    G.GROUP_CHANGE_PARTICIPANTS_PROMOTED: "promote",
    G.GROUP_CHANGE_PARTICIPANTS_DEMOTED: "demote",
    G.GROUP_CHANGE_JOINED: "add",
    G.GROUP_CHANGE_LEFT: "remove",
}


# Baileys' presence words (WAPresence) for chat presences.
CHAT_PRESENCES = {
    message_pb2.CHAT_PRESENCE_COMPOSING: "composing",
    message_pb2.CHAT_PRESENCE_RECORDING: "recording",
    message_pb2.CHAT_PRESENCE_PAUSED: "paused",
}


@dataclass(frozen=True)
class Envelope:
    """What Evolution puts around every event's data."""

    destination: str  # the webhook's URL
    sender: str  # the instance's own WhatsApp JID ("" before it ever linked)
    server_url: str


def to_evolution(event: event_pb2.Event, envelope: Envelope) -> dict[str, Any] | None:
    mapped = _event_and_data(event, envelope)
    if mapped is None:
        return None
    name, data = mapped
    return {
        "event": name,
        "instance": event.instance_id,
        "data": data,
        "destination": envelope.destination,
        "date_time": _iso(event.time.ToDatetime(tzinfo=UTC)),
        "sender": envelope.sender,
        "server_url": envelope.server_url,
        "apikey": None,  # Evolution sends the instance's token; zapgate never sends a key
    }


def _event_and_data(event: event_pb2.Event, envelope: Envelope) -> tuple[str, Any] | None:
    match event.WhichOneof("payload"):
        case "state_changed":
            state = event.state_changed.state
            data: dict[str, Any] = {"instance": event.instance_id}
            if state == S.INSTANCE_STATE_CONNECTED:  # Evolution adds who is connected
                data |= {"wuid": envelope.sender, "profileName": None, "profilePictureUrl": None}
            return "connection.update", data | {
                "state": CONNECTION_STATES.get(state, "close"),
                "statusReason": STATUS_REASONS.get(state, 428),
            }
        case "qr_updated":
            # zapgate never stores the code itself (it carries key material): only the count.
            return "qrcode.updated", {
                "qrcode": {"instance": event.instance_id, "count": event.qr_updated.index}
            }
        case "message_state_changed":
            return _message_state(event)
        case "message_received":
            return _received(event.instance_id, event.message_received)
        case "group_changed":
            return _group(event.group_changed)
        case "presence_changed":
            seen = event.presence_changed
            shown: dict[str, Any] = {
                "lastKnownPresence": "available" if seen.available else "unavailable"
            }
            if seen.HasField("last_seen"):
                shown["lastSeen"] = seen.last_seen.seconds
            return "presence.update", {"id": seen.jid, "presences": {seen.jid: shown}}
        case "chat_presence_changed":
            typing = event.chat_presence_changed
            known = CHAT_PRESENCES.get(typing.presence, "paused")
            return "presence.update", {
                "id": typing.chat_jid,
                "presences": {typing.sender_jid: {"lastKnownPresence": known}},
            }
        case "call_received":
            return "call", _call(event.call_received)
        case _:
            return None


def _received(instance_id: str, received: event_pb2.MessageReceived) -> tuple[str, Any] | None:
    """An edit is Evolution's `messages.edited` (the protocol message itself), a deletion
    for everyone its `messages.delete` (the deleted message's key); the rest `messages.upsert`."""
    content = received.WhichOneof("content")
    if content == "edited":
        key = _key(received, received.edited.message_id)
        protocol: dict[str, Any] = {
            "key": key,
            "type": "MESSAGE_EDIT",  # protobufjs' toJSON: enums by name, longs as strings
            "editedMessage": {"conversation": received.edited.text},
            "timestampMs": str(received.sent_time.ToMilliseconds()),
        }
        return "messages.edited", protocol
    if content == "revoked":
        return "messages.delete", _key(received, received.revoked.message_id)
    if content == "poll_vote":
        return None  # Evolution reports votes as messages.update pollUpdates, not upserts
    if content == "ephemeral_setting":
        return None  # Baileys reports a timer change as a chat update, not a message
    return "messages.upsert", _upsert(instance_id, received)


def _key(received: event_pb2.MessageReceived, message_id: str) -> dict[str, Any]:
    """Baileys' key of a message the sender of `received` wrote (participant in groups)."""
    key: dict[str, Any] = {
        "remoteJid": received.chat_jid,
        "fromMe": received.from_me,
        "id": message_id,
    }
    if received.group_jid:
        key["participant"] = received.sender_jid or received.sender_lid
    return key


def _call(call: event_pb2.CallReceived) -> dict[str, Any]:
    """Baileys' WACallEvent of an offer (`isVideo` and `isGroup` are unknown here: left out,
    as Evolution's JSON leaves out what Baileys leaves undefined)."""
    caller = call.caller_jid or call.caller_lid
    return {
        "chatId": caller,
        "from": caller,
        "id": call.call_id,
        "date": _iso(call.offer_time.ToDatetime(tzinfo=UTC)),
        "offline": False,
        "status": "offer",  # zapgate's event is the offer (rejected or not)
    }


def _group(changed: event_pb2.GroupChanged) -> tuple[str, Any] | None:
    """Baileys' `group-participants.update` and `groups.update` (an array of partial group
    metadata), with `author` only when WhatsApp named who did it."""
    author = {"author": changed.actor_jid} if changed.actor_jid else {}
    action = PARTICIPANT_ACTIONS.get(changed.change)
    if action is not None:
        participants = list(changed.participants)
        return "group-participants.update", {
            "id": changed.group_jid,
            **author,
            "participants": participants,
            "action": action,
            # Evolution's addition; without its participant cache, the number from the JID.
            "participantsData": [
                {"jid": jid, "phoneNumber": jid.split("@")[0]} for jid in participants
            ],
        }
    update: dict[str, Any] = {"id": changed.group_jid}
    match changed.change:
        case G.GROUP_CHANGE_NAME:
            update["subject"] = changed.name
        case G.GROUP_CHANGE_TOPIC:
            update["desc"] = changed.topic
        case G.GROUP_CHANGE_SETTINGS:
            if changed.HasField("announce"):
                update["announce"] = changed.announce
            if changed.HasField("locked"):
                update["restrict"] = changed.locked
        case _:
            return None
    return "groups.update", [update | author]


def _message_state(event: event_pb2.Event) -> tuple[str, dict[str, Any]] | None:
    change = event.message_state_changed
    key = {"remoteJid": change.recipient_jid, "fromMe": True, "id": change.whatsapp_message_id}
    if change.state == M.MESSAGE_STATE_SENT:
        return "send.message", {
            "key": key,
            "status": "SERVER_ACK",
            "messageTimestamp": event.time.seconds,
            "instanceId": event.instance_id,
            "zapgateMessageId": change.message_id,
        }
    status = UPDATE_STATUSES.get(change.state)
    if status is None:
        return None  # queued, sending, cancelled, expired, unknown: Evolution has no event
    return "messages.update", {  # no `participant`: Baileys' key has none outside groups
        "keyId": change.whatsapp_message_id,
        "remoteJid": change.recipient_jid,
        "fromMe": True,
        "status": status,
        "instanceId": event.instance_id,
        "zapgateMessageId": change.message_id,
    }


def _upsert(instance_id: str, received: event_pb2.MessageReceived) -> dict[str, Any]:
    key: dict[str, Any] = {
        "remoteJid": received.chat_jid,
        "fromMe": received.from_me,
        "id": received.message_id,
    }
    if received.group_jid:
        key["participant"] = received.sender_jid or received.sender_lid
    message_type, message = _content(received)
    upsert: dict[str, Any] = {
        "key": key,
        "pushName": received.push_name,
        "status": "DELIVERY_ACK",
        "message": message,
        "messageType": message_type,
        "messageTimestamp": received.sent_time.seconds,
        "instanceId": instance_id,
        "source": "unknown",
    }
    if received.HasField("reply_to"):  # prepareMessage lifts the content's contextInfo
        upsert["contextInfo"] = _context(received)
    return upsert


def _context(received: event_pb2.MessageReceived) -> dict[str, Any]:
    return {"stanzaId": received.reply_to.message_id, "participant": received.reply_to.sender_jid}


def _content(received: event_pb2.MessageReceived) -> tuple[str, dict[str, Any]]:
    context = _context(received) if received.HasField("reply_to") else None
    match received.WhichOneof("content"):
        case "text":
            # Evolution turns an extendedTextMessage (a reply, a link) into `conversation`.
            return "conversation", {"conversation": received.text}
        case "media":
            media = received.media
            kind = MEDIA_TYPES.get(media.kind, "documentMessage")
            fields: dict[str, Any] = {"mimetype": media.mime_type, "fileLength": str(media.size)}
            if media.caption:
                fields["caption"] = media.caption
            if media.file_name:
                fields["fileName"] = media.file_name
            if media.seconds:
                fields["seconds"] = media.seconds
            if media.kind in (K.MEDIA_KIND_AUDIO, K.MEDIA_KIND_VOICE_NOTE):
                fields["ptt"] = media.kind == K.MEDIA_KIND_VOICE_NOTE
            if context:
                fields["contextInfo"] = context
            return kind, {kind: fields}
        case "location":
            where = received.location
            location: dict[str, Any] = {
                "degreesLatitude": where.latitude,
                "degreesLongitude": where.longitude,
                "name": where.name,
                "address": where.address,
            }
            return "locationMessage", {"locationMessage": location}
        case "contact":
            card = {"displayName": received.contact.display_name, "vcard": received.contact.vcard}
            return "contactMessage", {"contactMessage": card}
        case "poll":
            poll = received.poll
            creation = {
                "name": poll.question,
                "options": [{"optionName": option} for option in poll.options],
                "selectableOptionsCount": poll.selectable_count,
            }
            return "pollCreationMessage", {"pollCreationMessage": creation}
        case "reaction":
            reaction = {
                "key": {"remoteJid": received.chat_jid, "id": received.reaction.message_id},
                "text": received.reaction.emoji,
            }
            return "reactionMessage", {"reactionMessage": reaction}
        case _:
            return "unknown", {}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
