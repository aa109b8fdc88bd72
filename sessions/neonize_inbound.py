"""neonize's message event (whatsmeow's events.Message) as zapgate's MessageReceived, and
the opaque media handle that lets the engine download a message's media later.

Pure functions: no Go calls, no I/O. neonize hands over its own `Message` protobuf: `Info`
(MessageInfo: ID, Pushname, Timestamp, and MessageSource: Chat, Sender, SenderAlt,
RecipientAlt, IsFromMe, IsGroup) and `Message` (waE2E.Message), which whatsmeow has already
unwrapped (`Raw` keeps the original). Unwrapping again here is harmless and keeps the mapping
right for wrappers whatsmeow does not know.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from typing import Any

from google.protobuf.message import DecodeError

from zapgate.sessions.errors import EngineError, NotConnected
from zapgate.sessions.events import InstanceKey, MessageReceived
from zapgate.sessions.neonize_events import LID_SERVER, USER_SERVER, epoch_seconds, user_jid

with warnings.catch_warnings():
    # Importing neonize runs `uname -a` through os.popen twice and never closes the pipes.
    warnings.simplefilter("ignore", ResourceWarning)
    # neonize ships no type information (no py.typed): every neonize name is Any.
    from neonize.proto import Neonize_pb2 as pb  # type: ignore[import-untyped]
    from neonize.proto.waE2E import (  # type: ignore[import-untyped]
        WAWebProtobufsE2E_pb2 as wa,
    )

# The neonize event type the engine subscribes to for inbound messages.
MESSAGE_EVENT: Any = pb.Message

GROUP_SERVER = "g.us"

# Wrappers whose `message` holds the real content (FutureProofMessage, and DeviceSentMessage:
# what this account sent from the phone, and EditedMessage: an edit, whose content is a
# MESSAGE_EDIT protocol message naming the edited message).
_WRAPPERS = (
    "editedMessage",
    "deviceSentMessage",
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "lottieStickerMessage",
    "groupMentionedMessage",
    "botInvokeMessage",
    "spoilerMessage",
)
_MAX_WRAPPING = 8

# Fields that travel along with content, or alone as device-to-device traffic: whatsmeow
# dispatches a group's sender-key distribution (sent to each device apart from the content)
# as a message of its own, with the content's message id.
_HOUSEKEEPING = frozenset(
    {
        "senderKeyDistributionMessage",
        "fastRatchetKeySenderKeyDistributionMessage",
        "messageContextInfo",
    }
)
# Protocol messages a person caused: a deletion, an edit and disappearing messages switched
# (kinds "revoke", "edit", "ephemeral_setting"). Every other type is traffic
# between this account's devices (history sync, app-state keys, ...) and is no message.
_PERSONAL_PROTOCOL_TYPES = frozenset(
    {
        wa.ProtocolMessage.REVOKE,
        wa.ProtocolMessage.MESSAGE_EDIT,
        wa.ProtocolMessage.EPHEMERAL_SETTING,
    }
)

# waE2E.Message media fields -> (zapgate kind, the field whatsmeow's DownloadAny reads).
# A round video note (ptv) is a VideoMessage downloaded as a video.
_MEDIA_FIELDS = {
    "imageMessage": ("image", "imageMessage"),
    "videoMessage": ("video", "videoMessage"),
    "ptvMessage": ("video", "videoMessage"),
    "audioMessage": ("audio", "audioMessage"),
    "documentMessage": ("document", "documentMessage"),
    "stickerMessage": ("sticker", "stickerMessage"),
}
# What whatsmeow's Download needs of a media message (plus the MIME type); a media handle
# keeps only these: thumbnails and quoted messages would make it many kilobytes.
_DOWNLOAD_FIELDS = (
    "URL",
    "directPath",
    "mediaKey",
    "fileEncSHA256",
    "fileSHA256",
    "fileLength",
    "mediaKeyTimestamp",
    "mimetype",
)
_MEDIA_REF_VERSION = "wa1"


def to_message_received(key: InstanceKey, event: Any) -> MessageReceived | None:
    """Maps neonize's Message event. None for device-to-device traffic that is no message
    (see `_HOUSEKEEPING`, `_PERSONAL_PROTOCOL_TYPES`); kind "unknown" for a message of a kind
    zapgate does not read."""
    info = event.Info
    message = unwrap(event.Message)
    content = _content_field(message)
    if content is None:
        return None
    return MessageReceived(
        key,
        view_once=_view_once(event, message, content),
        message_id=str(info.ID),
        timestamp=epoch_seconds(int(info.Timestamp)),
        push_name=str(info.Pushname),
        **addresses(info.MessageSource),
        **_content(message, content),
    )


_VIEW_ONCE_FLAGS = ("IsViewOnce", "IsViewOnceV2", "IsViewOnceV2Extension")


def _view_once(event: Any, message: Any, field: str) -> bool:
    """Whether media may be opened once: whatsmeow's flags for a view-once wrapper it took
    off, or the media's own viewOnce."""
    if field not in _MEDIA_FIELDS:
        return False
    wrapped = any(getattr(event, flag, False) for flag in _VIEW_ONCE_FLAGS)
    raw = event.Message
    wrapped = wrapped or any(raw.HasField(name) for name in _WRAPPERS if "iewOnce" in name)
    media = getattr(message, field)
    return bool(wrapped or ("viewOnce" in media.DESCRIPTOR.fields_by_name and media.viewOnce))


def read_content(message: Any) -> dict[str, Any] | None:
    """A waE2E.Message's content as MessageReceived fields (kind, text, media...); None for
    what is no message."""
    message = unwrap(message)
    content = _content_field(message)
    return None if content is None else _content(message, content)


def unwrap(message: Any) -> Any:
    """The content inside ephemeral, view-once, document-with-caption (...) wrappers."""
    for _ in range(_MAX_WRAPPING):
        wrapper = next((name for name in _WRAPPERS if message.HasField(name)), None)
        if wrapper is None:
            break
        message = getattr(message, wrapper).message
    return message


def media_ref(field: str, media: Any) -> str:
    """The opaque handle of a media message: the waE2E.Message field whatsmeow's DownloadAny
    reads, and the serialized media message cut down to what a download needs."""
    _, download_field = _MEDIA_FIELDS[field]
    kept = type(media)()
    for name in _DOWNLOAD_FIELDS:
        if media.HasField(name):
            setattr(kept, name, getattr(media, name))
    encoded = base64.urlsafe_b64encode(kept.SerializeToString()).decode()
    return f"{_MEDIA_REF_VERSION}:{download_field}:{encoded}"


def download_message(ref: str) -> Any:
    """The waE2E.Message to hand to neonize's `download_any` for a `media_ref`. Raises
    EngineError for a string that is no media handle of this engine (parsed here, in
    Python: Go's Unmarshal would crash the worker on bad bytes)."""
    version, _, rest = ref.partition(":")
    field, _, encoded = rest.partition(":")
    downloadable = {download_field for _, download_field in _MEDIA_FIELDS.values()}
    if version != _MEDIA_REF_VERSION or field not in downloadable or not encoded:
        raise EngineError("not a media reference of the neonize engine")
    media_type = type(getattr(wa.Message(), field))
    try:
        media = media_type.FromString(base64.b64decode(encoded, altchars=b"-_", validate=True))
    except (binascii.Error, ValueError, DecodeError) as error:
        raise EngineError(f"the media reference is damaged ({error})") from error
    return wa.Message(**{field: media})


def download_error(key: InstanceKey, text: str) -> EngineError:
    """What a failed download (whatsmeow's Download error text) means."""
    if "client is nil" in text or "websocket not connected" in text:
        return NotConnected(f"{key} could not download the media: it is not connected ({text})")
    if "status code 404" in text or "status code 410" in text:
        return EngineError(
            f"the media is no longer on WhatsApp's servers ({key}: {text}); WhatsApp keeps "
            "media for a limited time, ask the sender to send it again"
        )
    return EngineError(f"{key} could not download the media: {text}")


# -- addresses ---------------------------------------------------------------------------------


def addresses(source: Any) -> dict[str, Any]:
    """Sender as phone-number JID and LID where whatsmeow knows them (it gives one as the
    Sender, the other as SenderAlt), and the chat by phone number where known."""
    sender, alternate = source.Sender, source.SenderAlt
    phone_jid = _on_server(USER_SERVER, sender, alternate)
    lid = _on_server(LID_SERVER, sender, alternate)
    chat = source.Chat
    is_group = bool(source.IsGroup) or str(chat.Server) == GROUP_SERVER
    chat_jid = user_jid(chat)
    if not is_group and str(chat.Server) == LID_SERVER:
        # A one-to-one chat addressed by LID: the other side's number is the sender's
        # alternate, or, for what this account sent, the recipient's.
        other = source.RecipientAlt if source.IsFromMe else alternate
        chat_jid = _on_server(USER_SERVER, other) or chat_jid
    return {
        "chat_jid": chat_jid,
        # Where the number is unknown, the LID is the only address there is.
        "sender_jid": phone_jid or lid or user_jid(sender),
        "sender_lid": lid,
        "from_me": bool(source.IsFromMe),
        "group_jid": chat_jid if is_group else "",
    }


def _on_server(server: str, *jids: Any) -> str:
    return next((user_jid(jid) for jid in jids if str(jid.Server) == server and jid.User), "")


# -- content -----------------------------------------------------------------------------------


def _content_field(message: Any) -> str | None:
    """The name of the message's content field; "" for content zapgate does not read, None
    when there is no content (device-to-device traffic)."""
    set_fields = (str(field.name) for field, _ in message.ListFields())
    fields = [name for name in set_fields if name not in _HOUSEKEEPING]
    if not fields:
        return None
    for name in fields:
        if name in _MEDIA_FIELDS or name in _CONTENT_READERS:
            return name
    if fields == ["protocolMessage"]:
        protocol_type = message.protocolMessage.type
        if protocol_type not in _PERSONAL_PROTOCOL_TYPES:
            return None
        if protocol_type in _PROTOCOL_READERS:
            return "protocolMessage"
    return ""


def _content(message: Any, field: str) -> dict[str, Any]:
    if not field:
        return {"kind": "unknown"}
    body = getattr(message, field)
    if field == "protocolMessage":
        return _PROTOCOL_READERS[body.type](body)
    reader = _CONTENT_READERS.get(field)
    values = reader(body) if reader is not None else _media(field, body)
    return {**values, **_reply_context(body)}


def _media(field: str, media: Any) -> dict[str, Any]:
    kind, _ = _MEDIA_FIELDS[field]
    if kind == "audio" and media.PTT:
        kind = "voice_note"
    values: dict[str, Any] = {
        "kind": kind,
        "media_mime_type": str(media.mimetype),
        "media_size": int(media.fileLength),
        "media_sha256": bytes(media.fileSHA256).hex(),
        "media_ref": media_ref(field, media),
    }
    if kind in ("image", "video", "document"):
        values["text"] = str(media.caption)
    if kind in ("video", "audio", "voice_note"):
        values["media_seconds"] = int(media.seconds)
    if kind == "document":
        values["media_file_name"] = str(media.fileName)
    return values


def _reply_context(body: Any) -> dict[str, Any]:
    """The message this one replies to (ContextInfo.stanzaID, and its sender: participant)."""
    if isinstance(body, str) or "contextInfo" not in body.DESCRIPTOR.fields_by_name:
        return {}  # a plain conversation, or a kind that cannot reply (a reaction)
    if not body.HasField("contextInfo") or not body.contextInfo.stanzaID:
        return {}
    context = body.contextInfo
    return {
        "quoted_message_id": str(context.stanzaID),
        "quoted_sender_jid": str(context.participant),
    }


def _text(body: Any) -> dict[str, Any]:
    return {"kind": "text", "text": str(body)}


def _extended_text(body: Any) -> dict[str, Any]:
    return {"kind": "text", "text": str(body.text)}


def _location(body: Any) -> dict[str, Any]:
    return {
        "kind": "location",
        "latitude": float(body.degreesLatitude),
        "longitude": float(body.degreesLongitude),
        "location_name": str(body.name),
        "location_address": str(body.address),
    }


def _live_location(body: Any) -> dict[str, Any]:
    return {
        "kind": "location",
        "latitude": float(body.degreesLatitude),
        "longitude": float(body.degreesLongitude),
        "text": str(body.caption),
    }


def _contact(body: Any) -> dict[str, Any]:
    return {
        "kind": "contact",
        "contact_name": str(body.displayName),
        "contact_vcard": str(body.vcard),
    }


def _contacts(body: Any) -> dict[str, Any]:
    """Several cards in one message: one vCard stream (RFC 6350 allows many cards in one)."""
    names = [str(card.displayName) for card in body.contacts if card.displayName]
    return {
        "kind": "contact",
        "contact_name": str(body.displayName) or ", ".join(names),
        "contact_vcard": "\n".join(str(card.vcard).strip() for card in body.contacts),
    }


def _reaction(body: Any) -> dict[str, Any]:
    # An empty text removes the sender's reaction to that message.
    return {
        "kind": "reaction",
        "reaction_emoji": str(body.text),
        "reacted_message_id": str(body.key.ID),
    }


def _poll(body: Any) -> dict[str, Any]:
    return {
        "kind": "poll",
        "text": str(body.name),
        "poll_options": tuple(str(option.optionName) for option in body.options),
        "poll_selectable": int(body.selectableOptionsCount),
    }


def _poll_update(body: Any) -> dict[str, Any]:
    """A vote, still encrypted: the engine decrypts it with the live client (whatsmeow's
    DecryptPollVote needs the poll's secret from its store) and fills `poll_votes`."""
    return {"kind": "poll_vote", "target_message_id": str(body.pollCreationMessageKey.ID)}


def poll_votes(vote: Any) -> tuple[str, ...]:
    """The chosen options of a decrypted vote (waE2E.PollVoteMessage), as hex SHA-256."""
    return tuple(bytes(option).hex() for option in vote.selectedOptions)


_CONTENT_READERS = {
    "conversation": _text,
    "extendedTextMessage": _extended_text,
    "locationMessage": _location,
    "liveLocationMessage": _live_location,
    "contactMessage": _contact,
    "contactsArrayMessage": _contacts,
    "reactionMessage": _reaction,
    "pollCreationMessage": _poll,
    "pollCreationMessageV2": _poll,
    "pollCreationMessageV3": _poll,
    "pollUpdateMessage": _poll_update,
}


def _edit(body: Any) -> dict[str, Any]:
    """A MESSAGE_EDIT: the edited message's id and its new content (text, or a caption)."""
    edited = unwrap(body.editedMessage)
    field = _content_field(edited) or ""
    text = ""
    if field in ("conversation", "extendedTextMessage"):
        text = str(_CONTENT_READERS[field](getattr(edited, field))["text"])
    elif field in _MEDIA_FIELDS and "caption" in getattr(edited, field).DESCRIPTOR.fields_by_name:
        text = str(getattr(edited, field).caption)
    return {"kind": "edit", "text": text, "target_message_id": str(body.key.ID)}


def _revoke(body: Any) -> dict[str, Any]:
    return {"kind": "revoke", "target_message_id": str(body.key.ID)}


def _ephemeral_setting(body: Any) -> dict[str, Any]:
    # whatsmeow's ephemeralExpiration: the chat's new timer in seconds, 0 when switched off.
    return {"kind": "ephemeral_setting", "ephemeral_seconds": int(body.ephemeralExpiration)}


_PROTOCOL_READERS = {
    wa.ProtocolMessage.MESSAGE_EDIT: _edit,
    wa.ProtocolMessage.REVOKE: _revoke,
    wa.ProtocolMessage.EPHEMERAL_SETTING: _ephemeral_setting,
}
