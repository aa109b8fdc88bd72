"""Presences, chat presences and call offers the engines report become durable events,
appended with the instance's tenant scope like every other event."""

from __future__ import annotations

from zapgate.sessions.events import CallReceived, ChatPresenceChanged, PresenceChanged
from zapgate.v1 import event_pb2 as pb
from zapgate.v1 import message_pb2

CHAT_PRESENCES = {
    "composing": message_pb2.CHAT_PRESENCE_COMPOSING,
    "recording": message_pb2.CHAT_PRESENCE_RECORDING,
    "paused": message_pb2.CHAT_PRESENCE_PAUSED,
}


def presence_to_proto(event: PresenceChanged) -> pb.PresenceChanged:
    message = pb.PresenceChanged(jid=event.jid, lid=event.lid, available=event.available)
    if event.last_seen:
        message.last_seen.FromMicroseconds(int(event.last_seen * 1e6))
    return message


def chat_presence_to_proto(event: ChatPresenceChanged) -> pb.ChatPresenceChanged:
    return pb.ChatPresenceChanged(
        chat_jid=event.chat_jid,
        sender_jid=event.sender_jid,
        sender_lid=event.sender_lid,
        presence=CHAT_PRESENCES.get(event.presence, message_pb2.CHAT_PRESENCE_UNSPECIFIED),
    )


def call_to_proto(
    event: CallReceived, *, rejected: bool = False, reply_message_id: str = ""
) -> pb.CallReceived:
    message = pb.CallReceived(
        call_id=event.call_id,
        caller_jid=event.caller_jid,
        caller_lid=event.caller_lid,
        rejected=rejected,
        reply_message_id=reply_message_id,
    )
    if event.timestamp:
        message.offer_time.FromMicroseconds(int(event.timestamp * 1e6))
    return message
