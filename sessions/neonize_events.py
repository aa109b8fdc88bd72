"""neonize's protobuf events (and its QR / login-status callbacks) as zapgate engine events.

Pure functions: no Go calls, no I/O. neonize re-encodes whatsmeow's numeric codes as its own
protobuf enums (goneonize/utils/encoder.go); the tables below turn them back into the codes
WhatsApp and whatsmeow use, which is what zapgate's events and operators speak.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from zapgate.sessions.events import (
    ClientOutdated,
    Connected,
    ConnectFailed,
    ConnectRefused,
    Disconnected,
    EngineEvent,
    InstanceKey,
    KeepAliveFailing,
    KeepAliveRestored,
    LoggedOut,
    Paired,
    QrShown,
    QrTimedOut,
    ReadElsewhere,
    Receipt,
    StreamReplaced,
    TemporarilyBanned,
)

with warnings.catch_warnings():
    # Importing neonize runs `uname -a` through os.popen twice and never closes the pipes.
    warnings.simplefilter("ignore", ResourceWarning)
    # neonize ships no type information (no py.typed): every neonize name is Any.
    from neonize.proto import Neonize_pb2 as pb  # type: ignore[import-untyped]

# whatsmeow's QR schedule (qrchan.go): the first code lives 60 s, each next one 20 s.
FIRST_QR_LIFETIME_SECONDS = 60.0
NEXT_QR_LIFETIME_SECONDS = 20.0

USER_SERVER = "s.whatsapp.net"  # phone-number JIDs; "lid" JIDs carry no phone number
LID_SERVER = "lid"

# neonize's ConnectFailureReason enum -> whatsmeow's ConnectFailureReason (the server's code).
_CONNECT_FAILURE_CODES: Mapping[int, int] = {
    pb.GENERIC: 400,
    pb.LOGGED_OUT: 401,
    pb.TEMP_BANNED: 402,
    pb.MAIN_DEVICE_GONE: 403,
    pb.CLIENT_OUTDATED: 405,
    pb.UNKNOWN_LOGOUT: 406,
    pb.BAD_USER_AGENT: 409,
    pb.INTERNAL_SERVER_ERROR: 500,
    pb.EXPERIMENTAL: 501,
    pb.SERVICE_UNAVAILABLE: 503,
}

# neonize's TemporaryBan.TempBanReason enum -> whatsmeow's TempBanReason (101..106).
_TEMP_BAN_CODES: Mapping[int, int] = {
    pb.TemporaryBan.SEND_TO_TOO_MANY_PEOPLE: 101,
    pb.TemporaryBan.BLOCKED_BY_USERS: 102,
    pb.TemporaryBan.CREATED_TOO_MANY_GROUPS: 103,
    pb.TemporaryBan.SENT_TOO_MANY_SAME_MESSAGE: 104,
    pb.TemporaryBan.BROADCAST_LIST: 106,
}

# The neonize event types `to_engine_event` understands: the engine subscribes to exactly
# these, so neonize does not queue events nobody reads (its queue holds only 100).
MAPPED_EVENT_TYPES: tuple[Any, ...] = (
    pb.Connected,
    pb.Disconnected,
    pb.LoggedOut,
    pb.StreamReplaced,
    pb.TemporaryBan,
    pb.ConnectFailure,
    pb.ClientOutdated,
    pb.KeepAliveTimeout,
    pb.KeepAliveRestored,
    pb.PairStatus,
    pb.Receipt,
)

# neonize's Receipt.ReceiptType -> zapgate's receipt kind, for receipts the recipient sends
# about messages this account sent. whatsmeow's own types: DELIVERED is its "" (the device
# got it); INACTIVE is the delivery receipt of a client not marked online (WhatsApp Web in
# the background, whatsmeow itself by default): WhatsApp's apps draw no ticks for it, but
# the message did reach one of the recipient's devices; PLAYED is a voice note (or view-once
# media) opened. The rest is not about the recipient: SENDER
# and READ_SELF come from this account's own devices, RETRY asks whatsmeow to re-encrypt
# (which it does by itself), PEER_MSG and HISTORY_SYNC are device-to-device traffic, and
# neonize 0.5.2 reports whatsmeow's "played-self" (opened on this account's other device) as
# SERVER_ERROR (goneonize/utils/encoder.go, EncodeReceipts).
_RECEIPT_KINDS: Mapping[int, str] = {
    pb.Receipt.DELIVERED: "delivered",
    pb.Receipt.INACTIVE: "delivered",
    pb.Receipt.READ: "read",
    pb.Receipt.PLAYED: "played",
}

# Receipts this account's other devices send when it reads a chat there: "read" (read
# receipts on) or "read-self" (read receipts off in the privacy settings).
_OWN_READ_KINDS = frozenset({pb.Receipt.READ, pb.Receipt.READ_SELF})

# neonize's Go side stamps times in milliseconds (UnixMilli, current goneonize), older builds
# in seconds: 10^11 seconds is the year 5138, 10^11 milliseconds is 1973, so the size tells.
_MILLISECONDS_FROM = 10**11


def epoch_seconds(timestamp: int) -> float:
    """A neonize timestamp (seconds or milliseconds, see above) in epoch seconds."""
    return timestamp / 1000 if timestamp >= _MILLISECONDS_FROM else float(timestamp)


# Final items of whatsmeow's QR channel, reported by neonize's login-status callback.
QR_SUCCESS = "success"
QR_TIMEOUT = "timeout"
QR_CLIENT_OUTDATED = "err-client-outdated"


def to_engine_event(key: InstanceKey, event: Any, me: Any = None) -> EngineEvent | None:
    """Maps one neonize event. `me` is neonize's Device of this client (what neonize sends
    before any other event): its Connected event carries no JID of its own. Returns None
    for events zapgate does not report (e.g. a failed PairStatus: the QR channel reports the
    failure through the login status, see `login_status_event`)."""
    match event:
        case pb.Connected():
            jid = me.JID if me is not None else pb.JID()
            return Connected(key, jid=jid_string(jid), phone=phone_number(jid))
        case pb.PairStatus(Status=pb.PairStatus.SUCCESS):
            return Paired(key, jid=jid_string(event.ID), phone=phone_number(event.ID))
        case pb.Disconnected():
            return Disconnected(key)
        case pb.LoggedOut():
            return LoggedOut(key, detail=_failure_detail(event.Reason, ""))
        case pb.StreamReplaced():
            return StreamReplaced(key)
        case pb.TemporaryBan():
            return _temporarily_banned(key, event)
        case pb.ConnectFailure():
            return _connect_refused(key, event)
        case pb.ClientOutdated():
            return ClientOutdated(key)
        case pb.KeepAliveTimeout():
            return KeepAliveFailing(key, failures=int(event.ErrorCount))
        case pb.KeepAliveRestored():
            return KeepAliveRestored(key)
        case pb.Receipt():
            return _receipt(key, event)
    return None


def qr_shown(key: InstanceKey, code: bytes, index: int) -> QrShown:
    """The `index`-th QR code (from 0) of one pairing attempt, as neonize's QR callback
    hands it over."""
    lifetime = FIRST_QR_LIFETIME_SECONDS if index == 0 else NEXT_QR_LIFETIME_SECONDS
    return QrShown(key, code=code.decode(), index=index, lifetime_seconds=lifetime)


def login_status_event(key: InstanceKey, status: str) -> EngineEvent | None:
    """The final item of whatsmeow's QR channel. Success is reported by the PairStatus
    event instead; every other ending stops the pairing attempt."""
    if status == QR_SUCCESS:
        return None
    if status == QR_TIMEOUT:
        return QrTimedOut(key)
    if status == QR_CLIENT_OUTDATED:
        return ClientOutdated(key)
    return ConnectFailed(key, detail=f"QR pairing ended: {status}")


def jid_string(jid: Any) -> str:
    """whatsmeow's JID.String(): user[.agent][:device]@server."""
    user, server = str(jid.User), str(jid.Server)
    if not user:
        return server
    if jid.RawAgent > 0:
        return f"{user}.{int(jid.RawAgent)}:{int(jid.Device)}@{server}"
    if jid.Device > 0:
        return f"{user}:{int(jid.Device)}@{server}"
    return f"{user}@{server}"


def phone_number(jid: Any) -> str:
    """E.164 number of a phone-number JID; empty for any other JID (LID, group...)."""
    if str(jid.Server) != USER_SERVER or not jid.User:
        return ""
    return f"+{jid.User}"


def user_jid(jid: Any) -> str:
    """`user@server` without agent or device (the user or chat, not one of its devices);
    empty for a JID with no user (whatsmeow's empty JID: nothing known)."""
    user, server = str(jid.User), str(jid.Server)
    return f"{user}@{server}" if user else ""


def _receipt(key: InstanceKey, event: Any) -> Receipt | ReadElsewhere | None:
    source = event.MessageSource
    if source.IsFromMe:
        return _read_elsewhere(key, event)
    kind = _RECEIPT_KINDS.get(int(event.Type))
    if kind is None or not event.MessageIDs:
        return None
    sender, alternate = source.Sender, source.SenderAlt
    return Receipt(
        key,
        message_ids=tuple(event.MessageIDs),
        kind=kind,
        chat=_chat(source),
        from_jid=_on(USER_SERVER, sender, alternate) or user_jid(sender),
        from_lid=_on(LID_SERVER, sender, alternate),
    )


def _read_elsewhere(key: InstanceKey, event: Any) -> ReadElsewhere | None:
    """A read receipt from this account's own device: the account read others' messages
    there. whatsmeow names the chat (the `recipient` of the receipt) in Chat, a one-to-one
    chat's phone number, where WhatsApp addresses it by LID, in RecipientAlt."""
    if int(event.Type) not in _OWN_READ_KINDS or not event.MessageIDs:
        return None
    source = event.MessageSource
    chat = source.Chat
    if not source.IsGroup and str(chat.Server) == LID_SERVER and phone_number(source.RecipientAlt):
        chat = source.RecipientAlt
    return ReadElsewhere(
        key,
        chat=jid_string(_without_device(chat)),
        message_ids=tuple(str(message_id) for message_id in event.MessageIDs),
        timestamp=epoch_seconds(int(event.Timestamp)),
    )


def _on(server: str, *jids: Any) -> str:
    """The first of `jids` on `server` (a user's phone-number JID or LID), as text."""
    return next((user_jid(j) for j in jids if str(j.Server) == server and j.User), "")


def _chat(source: Any) -> str:
    """The chat a receipt is about, as a phone-number JID when whatsmeow knows it: messages
    are sent to phone numbers, but WhatsApp may address the receipt of a one-to-one chat
    with the recipient's LID, and then names the phone number as the sender's alternate."""
    chat, alternate = source.Chat, source.SenderAlt
    if not source.IsGroup and str(chat.Server) == LID_SERVER and phone_number(alternate):
        chat = alternate
    return jid_string(_without_device(chat))


def _without_device(jid: Any) -> Any:
    plain = type(jid)()
    plain.CopyFrom(jid)
    plain.RawAgent = 0
    plain.Device = 0
    return plain


# Codes neonize's enums do not know never reach Python: neonize leaves the (required) field
# unset, Go's proto.Marshal refuses the event and neonize's event loop ends with that error,
# which the engine reports as the end of the connection. For receipts this is a live case:
# neonize 0.5.2 has no enum value for whatsmeow's "server-error" receipt (nor for any type
# WhatsApp adds later), so one of those ends the connection (checked in the switch that the
# 0.5.2 library compiled from EncodeReceipts, which compares no 12-byte type name).


def _temporarily_banned(key: InstanceKey, event: Any) -> TemporarilyBanned:
    code = _TEMP_BAN_CODES[int(event.Code)]
    # Expire is whatsmeow's time.Duration in whole seconds: time left, not a timestamp.
    return TemporarilyBanned(key, code=code, expires_in_seconds=float(event.Expire))


def _connect_refused(key: InstanceKey, event: Any) -> ConnectRefused:
    code = _CONNECT_FAILURE_CODES[int(event.Reason)]
    return ConnectRefused(key, code=code, detail=_failure_detail(event.Reason, event.Message))


def _failure_detail(reason: Any, message: Any) -> str:
    """The server's message when it sent one, else the reason's name."""
    return str(message) if message else str(pb.ConnectFailureReason.Name(reason))
