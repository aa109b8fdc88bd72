"""neonize's presence, chat presence and call offer events (whatsmeow's events.Presence,
events.ChatPresence, events.CallOffer) as zapgate's own events. Pure functions: no Go calls.

A presence names its contact by whichever JID WhatsApp used (a phone number or a LID); a chat
presence carries a MessageSource like a message (sender and its alternate); a call offer its
creator and the creator's alternate (`callCreatorAlt`)."""

from __future__ import annotations

import warnings
from typing import Any

from zapgate.sessions.events import (
    CallReceived,
    ChatPresenceChanged,
    EngineEvent,
    InstanceKey,
    PresenceChanged,
)
from zapgate.sessions.neonize_events import LID_SERVER, USER_SERVER, epoch_seconds, user_jid
from zapgate.sessions.neonize_inbound import addresses

with warnings.catch_warnings():
    # Importing neonize runs `uname -a` through os.popen twice and never closes the pipes.
    warnings.simplefilter("ignore", ResourceWarning)
    # neonize ships no type information (no py.typed): every neonize name is Any.
    from neonize.proto import Neonize_pb2 as pb  # type: ignore[import-untyped]

# The neonize event types the engine subscribes to for these.
PRESENCE_EVENT_TYPES: tuple[Any, ...] = (pb.Presence, pb.ChatPresence, pb.CallOffer)

_COMPOSING = pb.ChatPresence.ChatPresence.COMPOSING
_AUDIO = pb.ChatPresence.ChatPresenceMedia.AUDIO


def to_presence_event(key: InstanceKey, event: Any) -> EngineEvent | None:
    match event:
        case pb.Presence():
            return _presence(key, event)
        case pb.ChatPresence():
            return _chat_presence(key, event)
        case pb.CallOffer():
            return _call_offer(key, event)
    return None


def _presence(key: InstanceKey, event: Any) -> PresenceChanged | None:
    who = event.From
    if not who.User:
        return None
    lid = user_jid(who) if str(who.Server) == LID_SERVER else ""
    return PresenceChanged(
        key,
        jid=user_jid(who),
        lid=lid,
        available=not bool(event.Unavailable),
        last_seen=_seconds(int(event.LastSeen)),
    )


def _chat_presence(key: InstanceKey, event: Any) -> ChatPresenceChanged:
    source = addresses(event.MessageSource)
    if event.State != _COMPOSING:
        presence = "paused"
    else:
        presence = "recording" if event.Media == _AUDIO else "composing"
    return ChatPresenceChanged(
        key,
        chat_jid=source["chat_jid"],
        sender_jid=source["sender_jid"],
        sender_lid=source["sender_lid"],
        presence=presence,
    )


def _call_offer(key: InstanceKey, event: Any) -> CallReceived | None:
    meta = event.basicCallMeta
    creator, alternate = meta.callCreator, meta.callCreatorAlt
    caller = creator if creator.User else getattr(meta, "from")  # `from` is a Python keyword
    if not caller.User:
        return None
    phone = next(
        (user_jid(j) for j in (caller, alternate) if j.User and str(j.Server) == USER_SERVER), ""
    )
    lid = next(
        (user_jid(j) for j in (caller, alternate) if j.User and str(j.Server) == LID_SERVER), ""
    )
    return CallReceived(
        key,
        call_id=str(meta.callID),
        caller_jid=phone or user_jid(caller),
        caller_lid=lid,
        timestamp=_seconds(int(meta.timestamp)),
        from_jid=user_jid(getattr(meta, "from")) or user_jid(caller),
    )


def _seconds(timestamp: int) -> float:
    return epoch_seconds(timestamp) if timestamp > 0 else 0.0
