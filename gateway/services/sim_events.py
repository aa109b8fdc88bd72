"""What the simulated WhatsApp reports for SimulatorService's InjectPresence and InjectCall:
the engine events a real engine would map from whatsmeow's Presence, ChatPresence and
CallOffer, validated field by field."""

from __future__ import annotations

import secrets
import time

from zapgate.gateway.rpc.errors import FieldViolation
from zapgate.gateway.rpc.validation import check_message_id, check_phone, check_timestamp
from zapgate.gateway.services.chats import check_chat_jid
from zapgate.gateway.store.inbound import MAX_MARK_READ
from zapgate.sessions.events import (
    CallReceived,
    ChatPresenceChanged,
    PresenceChanged,
    ReadElsewhere,
)
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as pb

CHAT_PRESENCES = {
    mpb.CHAT_PRESENCE_COMPOSING: "composing",
    mpb.CHAT_PRESENCE_RECORDING: "recording",
    mpb.CHAT_PRESENCE_PAUSED: "paused",
}


def caller_violations(phone: str, lid: str) -> list[FieldViolation]:
    violations = check_phone("from_phone", phone)
    if not phone:
        violations.append(FieldViolation("from_phone", "required"))
    if lid and not lid.isdigit():
        violations.append(FieldViolation("from_lid", "the LID's user part: digits only"))
    return violations


def presence_violations(request: pb.InjectPresenceRequest) -> list[FieldViolation]:
    violations = caller_violations(request.from_phone, request.from_lid)
    which = request.WhichOneof("presence")
    if which is None:
        violations.append(FieldViolation("presence", "give available or chat_presence"))
    elif which == "chat_presence" and request.chat_presence not in CHAT_PRESENCES:
        violations.append(FieldViolation("chat_presence", "COMPOSING, RECORDING or PAUSED"))
    if request.HasField("last_seen"):
        violations += check_timestamp("last_seen", request.last_seen)
    if request.group_jid and (which != "chat_presence" or not request.group_jid.endswith("@g.us")):
        violations.append(FieldViolation("group_jid", "a group JID (...@g.us), with chat_presence"))
    return violations


def presence_event(
    key: str, request: pb.InjectPresenceRequest
) -> PresenceChanged | ChatPresenceChanged:
    jid = f"{request.from_phone.lstrip('+')}@s.whatsapp.net"
    lid = f"{request.from_lid}@lid" if request.from_lid else ""
    if request.WhichOneof("presence") == "chat_presence":
        return ChatPresenceChanged(
            key,
            chat_jid=request.group_jid or jid,
            sender_jid=jid,
            sender_lid=lid,
            presence=CHAT_PRESENCES[request.chat_presence],
        )
    last_seen = 0.0
    if not request.available:
        given = request.last_seen.ToMicroseconds() / 1e6 if request.HasField("last_seen") else 0
        last_seen = given or float(int(time.time()))
    return PresenceChanged(key, jid=jid, lid=lid, available=request.available, last_seen=last_seen)


def call_event(key: str, request: pb.InjectCallRequest) -> CallReceived:
    return CallReceived(
        key,
        call_id=request.call_id or secrets.token_hex(16).upper(),
        caller_jid=f"{request.from_phone.lstrip('+')}@s.whatsapp.net",
        caller_lid=f"{request.from_lid}@lid" if request.from_lid else "",
        timestamp=float(int(time.time())),
    )


def read_on_phone_violations(request: pb.ReadOnPhoneRequest) -> list[FieldViolation]:
    violations = check_chat_jid("chat_jid", request.chat_jid)
    if not request.message_ids:
        violations.append(FieldViolation("message_ids", "at least one id"))
    elif len(request.message_ids) > MAX_MARK_READ:
        violations.append(FieldViolation("message_ids", f"at most {MAX_MARK_READ}"))
    for index, message_id in enumerate(request.message_ids):
        violations += check_message_id(f"message_ids[{index}]", message_id)
    return violations


def read_on_phone_event(key: str, request: pb.ReadOnPhoneRequest) -> ReadElsewhere:
    """What a real engine reports when the account's phone reads these messages."""
    return ReadElsewhere(
        key,
        chat=request.chat_jid,
        message_ids=tuple(request.message_ids),
        timestamp=float(int(time.time())),  # WhatsApp stamps whole seconds
    )
