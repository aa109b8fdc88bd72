"""Outgoing messages as whatsmeow's protobufs, and what whatsmeow's send errors mean.

Pure functions: no Go calls, no network. The engine (neonize_messaging.py) uploads media and
sends; this module says what to upload, builds the message from the upload's result and
turns whatsmeow's error texts into zapgate's errors.

neonize's own builders (`NewClient.build_image_message` and the like) are not used: each one
uploads inside itself, so nothing can be built, or tested, without WhatsApp's media servers;
they read the length and the thumbnail of video and audio with ffmpeg, which a worker does not
have; and they copy the media file's hashes into the thumbnail fields. The messages below
carry the fields whatsmeow's documentation and WhatsApp's own clients fill in; what needs a
decoder zapgate lacks (video length and thumbnail, length of audio other than Ogg Opus) is
left out, and WhatsApp's apps read it from the file once downloaded.
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from zapgate.sessions.engine import Media, MessageRef, OutgoingContent
from zapgate.sessions.errors import EngineError, MaybeSent, NotConnected, SendRefused
from zapgate.sessions.neonize_events import USER_SERVER

with warnings.catch_warnings():
    # Importing neonize runs `uname -a` through os.popen twice and never closes the pipes.
    warnings.simplefilter("ignore", ResourceWarning)
    # neonize ships no type information (no py.typed): every neonize name is Any.
    from neonize.proto import Neonize_pb2 as pb  # type: ignore[import-untyped]
    from neonize.proto.waCommon import (  # type: ignore[import-untyped]
        WACommon_pb2 as wa_common,
    )
    from neonize.proto.waE2E import (  # type: ignore[import-untyped]
        WAWebProtobufsE2E_pb2 as wa,
    )
    from neonize.utils.enum import (  # type: ignore[import-untyped]
        ChatPresence,
        ChatPresenceMedia,
        MediaType,
        Presence,
        ReceiptType,
        VoteType,
    )

READ_RECEIPT: Any = ReceiptType.READ

GROUP_SERVER = "g.us"
# What zapgate's API accepts (gateway/services/messages.py); a device part names one of the
# user's devices, and whatsmeow sends only to users: it is dropped.
_USER_JID = re.compile(r"([0-9]{5,20})(?::[0-9]+)?@(s\.whatsapp\.net|lid)")
_GROUP_JID = re.compile(r"([0-9-]{5,40})@g\.us")

# The MIME type WhatsApp's apps give voice notes; with another one, iOS does not play them.
VOICE_NOTE_MIME = "audio/ogg; codecs=opus"
_OPUS_RATE = 48_000  # Ogg Opus granule positions count 48 kHz samples (RFC 7845)
THUMBNAIL_PIXELS = 72  # longest side of an image's inline preview
_THUMBNAIL_QUALITY = 60

# whatsmeow's upload endpoints differ per kind (image, video, audio, document), and the
# media key is derived with a per-kind label: a file uploaded as the wrong kind cannot be
# decrypted by the recipient.
_UPLOAD_TYPES: dict[str, Any] = {
    "image": MediaType.MediaImage,
    "video": MediaType.MediaVideo,
    "audio": MediaType.MediaAudio,
    "document": MediaType.MediaDocument,
    "sticker": MediaType.MediaImage,  # whatsmeow uploads stickers as images
}
STICKER_MIME = "image/webp"
LINK_THUMBNAIL_PIXELS = 256  # longest side of a link preview's inline JPEG

# -- recipients ----------------------------------------------------------------------------


def parse_recipient(recipient_jid: str) -> Any:
    """neonize's JID for a recipient: a phone-number user (`5511999998888@s.whatsapp.net`),
    a LID user (`123456789012345@lid`) or a group (`120363025246125888@g.us`)."""
    if user_jid := _USER_JID.fullmatch(recipient_jid):
        return jid(user_jid[1], user_jid[2])
    if group_jid := _GROUP_JID.fullmatch(recipient_jid):
        return jid(group_jid[1], GROUP_SERVER)
    raise SendRefused(
        "invalid_recipient",
        f"{recipient_jid!r} is not a WhatsApp user or group JID "
        "(e.g. 5511999998888@s.whatsapp.net, 123456789012345@lid, 120363025246125888@g.us)",
    )


def jid(user: str, server: str) -> Any:
    """A JID with every field set, as Go's Unmarshal requires of neonize's proto2 JID."""
    return pb.JID(User=user, RawAgent=0, Device=0, Integrator=0, Server=server, IsEmpty=False)


def jid_text(to: Any) -> str:
    """neonize's JID as text, without a device (`5511999998888@s.whatsapp.net`)."""
    return f"{to.User}@{to.Server}"


def phone_user(to: Any) -> str:
    """The digits of a phone-number JID (what WhatsApp's number lookup takes); empty for LIDs
    and groups."""
    return str(to.User) if str(to.Server) == USER_SERVER else ""


_PRESENCES = {
    "composing": (ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
    "recording": (
        ChatPresence.CHAT_PRESENCE_COMPOSING,
        ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO,
    ),
    "paused": (ChatPresence.CHAT_PRESENCE_PAUSED, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
}


# The account's own presence (whatsmeow's SendPresence), and a subscription to a contact's
# (SubscribePresence): Engine.send_presence's other words.
ACCOUNT_PRESENCES: dict[str, Any] = {
    "available": Presence.AVAILABLE,
    "unavailable": Presence.UNAVAILABLE,
}
SUBSCRIBE = "subscribe"


def presence_state(presence: str) -> tuple[Any, Any]:
    """neonize's (ChatPresence, ChatPresenceMedia) for composing, recording (whatsmeow: a
    composing presence with media "audio") or paused."""
    found = _PRESENCES.get(presence)
    if found is None:
        raise EngineError(f"unknown chat presence {presence!r}")
    return found


def typing_state(typing: bool) -> tuple[Any, Any]:
    """neonize's (ChatPresence, ChatPresenceMedia) for "typing..." shown or withdrawn."""
    state = ChatPresence.CHAT_PRESENCE_COMPOSING if typing else ChatPresence.CHAT_PRESENCE_PAUSED
    return state, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT


# -- content -------------------------------------------------------------------------------


def upload_of(content: OutgoingContent) -> tuple[Media, Any] | None:
    """The media to upload before `content` can be built, and neonize's MediaType for it;
    None for text, location and contact cards."""
    kind = content.kind
    media: Media | None = getattr(content, kind) if kind in _UPLOAD_TYPES else None
    if media is None:
        return None
    return media, _UPLOAD_TYPES[kind]


def check_content(content: OutgoingContent) -> None:
    """Refuses content WhatsApp cannot show (SendRefused "invalid_content"), before anything
    is uploaded or sent."""
    kind = content.kind
    if content.action:
        if content.target is None or not content.target.message_id:
            _invalid(f"a {kind} names no message")
        elif kind in ("edit", "revoke") and not content.target.from_me:
            _invalid(f"only the instance's own messages can take a {kind}")
        if kind == "edit" and not content.text.strip():
            _invalid("the edited text is empty")
        return
    if kind == "text" and not content.text.strip():
        _invalid("the text is empty")
    if content.view_once and not (kind in ("image", "video") or content.voice_note):
        _invalid(f"a {kind} cannot be view-once (only images, videos and voice notes)")
    if content.link_url and (kind != "text" or content.link_url not in content.text):
        _invalid("a link preview needs a text containing its URL")
    if kind == "poll":
        options = content.poll_options
        if not content.poll_question.strip() or not 2 <= len(options) <= 12:
            _invalid("a poll needs a question and 2 to 12 options")
        if len(set(options)) != len(options) or not all(o.strip() for o in options):
            _invalid("a poll's options must be distinct and not empty")
        if not 0 <= content.poll_selectable <= len(options):
            _invalid(
                f"a poll of {len(options)} options cannot let {content.poll_selectable} be chosen"
            )
    if kind == "location":
        latitude, longitude = content.latitude, content.longitude
        if latitude is None or longitude is None or not _on_earth(latitude, longitude):
            _invalid(f"({latitude}, {longitude}) is not a latitude and longitude")
    if kind == "contact" and not contact_name(content):
        _invalid("the contact card has no name (no contact_name and no FN line in the vCard)")
    if (upload := upload_of(content)) is not None:
        media = upload[0]
        if not media.data:
            _invalid(f"the {kind} has no data")
        if "/" not in media.mime_type:
            _invalid(f"the {kind}'s MIME type {media.mime_type!r} is not a MIME type")
    voice_note = content.audio.data if content.audio is not None and content.voice_note else None
    if voice_note is not None and ogg_opus_seconds(voice_note) is None:
        _invalid(
            "a voice note must be Ogg Opus audio (WhatsApp's format for voice notes); "
            "send other audio as a plain audio message"
        )


def build_message(content: OutgoingContent, uploaded: Any = None, *, now: float = 0.0) -> Any:
    """whatsmeow's Message for `content`. Media needs neonize's UploadResponse of its file
    (`upload_of` says which); `now` (epoch seconds) stamps the media key."""
    check_content(content)
    if content.action:
        return _action(content, now)
    if content.kind == "poll":
        raise ValueError("a poll is built by neonize's client: use build_poll")
    message = _content_message(content, uploaded, now)
    context = context_info(content)
    if context is not None:
        if message.HasField("conversation"):
            text = message.conversation
            message = wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text=text))
        [(_, inner)] = message.ListFields()
        inner.contextInfo.CopyFrom(context)
    if content.view_once:
        # As WhatsApp's apps send it: the media flagged and wrapped in viewOnceMessage.
        [(_, inner)] = message.ListFields()
        inner.viewOnce = True
        message = wa.Message(viewOnceMessage=wa.FutureProofMessage(message=message))
    return message


def build_poll(client: Any, content: OutgoingContent) -> Any:
    """whatsmeow's poll (neonize's build_poll_vote_creation: BuildPollCreation, a
    PollCreationMessage with a fresh 32-byte messageSecret in messageContextInfo). whatsmeow
    keeps that secret when it sends the poll: votes are encrypted with it, and
    DecryptPollVote reads it back. neonize takes only single or multiple choice; WhatsApp's
    field is a count, set here as asked. A pure Go call: no network."""
    check_content(content)
    choice = VoteType.SINGLE if content.poll_selectable == 1 else VoteType.MULTIPLE
    message = client.build_poll_vote_creation(
        content.poll_question, list(content.poll_options), choice
    )
    message.pollCreationMessage.selectableOptionsCount = content.poll_selectable
    context = context_info(content)
    if context is not None:
        message.pollCreationMessage.contextInfo.CopyFrom(context)
    return message


def context_info(content: OutgoingContent) -> Any:
    """WhatsApp's ContextInfo of a reply and its mentions, as neonize's build_reply_message
    makes it (stanzaID, participant, quotedMessage; mentionedJID); None for neither."""
    if content.quote is None and not content.mentions:
        return None
    context = wa.ContextInfo(mentionedJID=list(content.mentions))
    if (quote := content.quote) is not None:
        context.stanzaID = quote.message_id
        context.participant = quote.sender_jid
        context.quotedMessage.CopyFrom(quoted_message(quote))
    return context


def quoted_message(quote: MessageRef) -> Any:
    """The quoted message as the reply bubble shows it: its text or caption and its kind.
    Media is shown by its kind and caption (the quote carries no media keys)."""
    text = quote.text or None
    if quote.kind == "image":
        return wa.Message(imageMessage=wa.ImageMessage(caption=text))
    if quote.kind == "video":
        return wa.Message(videoMessage=wa.VideoMessage(caption=text))
    if quote.kind in ("audio", "voice_note"):
        return wa.Message(audioMessage=wa.AudioMessage(PTT=quote.kind == "voice_note"))
    if quote.kind == "document":
        return wa.Message(documentMessage=wa.DocumentMessage(caption=text))
    if quote.kind == "location":
        return wa.Message(locationMessage=wa.LocationMessage(name=text))
    if quote.kind == "contact":
        return wa.Message(contactMessage=wa.ContactMessage(displayName=text))
    if quote.kind == "poll":
        return wa.Message(pollCreationMessage=wa.PollCreationMessage(name=text))
    return wa.Message(conversation=quote.text)


def message_key(ref: MessageRef) -> Any:
    """WhatsApp's key of a message (whatsmeow's BuildMessageKey): its chat, whether the
    instance sent it, its id, and in a group who wrote it."""
    key = wa_common.MessageKey(remoteJID=ref.chat_jid, fromMe=ref.from_me, ID=ref.message_id)
    if not ref.from_me and ref.chat_jid.endswith("@" + GROUP_SERVER):
        key.participant = ref.sender_jid
    return key


def _action(content: OutgoingContent, now: float) -> Any:
    """A reaction (whatsmeow's BuildReaction), an edit (BuildEdit: a MESSAGE_EDIT protocol
    message inside editedMessage, which makes whatsmeow send it with edit="1") or a revoke
    (BuildRevoke: a REVOKE protocol message, sent with edit="7")."""
    target = content.target
    assert target is not None  # check_content
    key = message_key(target)
    millis = int(now * 1000)
    if content.action == "reaction":
        reaction = wa.ReactionMessage(
            key=key, text=content.reaction_emoji, senderTimestampMS=millis
        )
        return wa.Message(reactionMessage=reaction)
    if content.action == "edit":
        edit = wa.ProtocolMessage(
            key=key,
            type=wa.ProtocolMessage.MESSAGE_EDIT,
            editedMessage=wa.Message(conversation=content.text),
            timestampMS=millis,
        )
        return wa.Message(
            editedMessage=wa.FutureProofMessage(message=wa.Message(protocolMessage=edit))
        )
    return wa.Message(protocolMessage=wa.ProtocolMessage(key=key, type=wa.ProtocolMessage.REVOKE))


def addressed(content: OutgoingContent, chat_jid: str) -> OutgoingContent:
    """`content` with the chat of its target as WhatsApp knows it (a number lookup may have
    answered another form of the number)."""
    if content.target is None or content.target.chat_jid == chat_jid:
        return content
    return dataclasses.replace(
        content, target=dataclasses.replace(content.target, chat_jid=chat_jid)
    )


def _content_message(content: OutgoingContent, uploaded: Any, now: float) -> Any:
    kind = content.kind
    if kind == "text" and content.link_url:
        return wa.Message(extendedTextMessage=link_preview(content))
    if kind == "text":
        return wa.Message(conversation=content.text)
    if kind == "location":
        return wa.Message(
            locationMessage=wa.LocationMessage(
                degreesLatitude=content.latitude,
                degreesLongitude=content.longitude,
                name=content.location_name or None,
                address=content.location_address or None,
            )
        )
    if kind == "contact":
        return wa.Message(
            contactMessage=wa.ContactMessage(
                displayName=contact_name(content), vcard=content.contact_vcard
            )
        )
    if uploaded is None:
        raise ValueError(f"a {kind} message needs the UploadResponse of its file")
    media = _media(content)
    file = {
        "URL": uploaded.url,
        "directPath": uploaded.DirectPath,
        "mediaKey": uploaded.MediaKey,
        "mediaKeyTimestamp": int(now),
        "fileEncSHA256": uploaded.FileEncSHA256,
        "fileSHA256": uploaded.FileSHA256,
        "fileLength": uploaded.FileLength,
    }
    caption = {"caption": media.caption} if media.caption else {}
    if kind == "image":
        image = wa.ImageMessage(mimetype=media.mime_type, **file, **caption)
        if (preview := image_preview(media.data)) is not None:
            image.JPEGThumbnail, image.width, image.height = preview
        return wa.Message(imageMessage=image)
    if kind == "video":
        return wa.Message(videoMessage=wa.VideoMessage(mimetype=media.mime_type, **file, **caption))
    if kind == "sticker":
        sticker = wa.StickerMessage(mimetype=STICKER_MIME, **file)
        if (shape := webp_shape(media.data)) is not None:
            sticker.width, sticker.height, sticker.isAnimated = shape
        return wa.Message(stickerMessage=sticker)
    if kind == "audio":
        audio = wa.AudioMessage(mimetype=media.mime_type, PTT=content.voice_note, **file)
        if content.voice_note:
            audio.mimetype = VOICE_NOTE_MIME
        if (seconds := ogg_opus_seconds(media.data)) is not None:
            audio.seconds = seconds
        return wa.Message(audioMessage=audio)
    name = media.file_name or "file"
    return wa.Message(
        documentMessage=wa.DocumentMessage(
            mimetype=media.mime_type, fileName=name, title=name, **file, **caption
        )
    )


def link_preview(content: OutgoingContent) -> Any:
    """A text with the preview of its URL (what neonize's send_message(link_preview=True)
    builds after fetching the page, from the caller's data instead): matchedText, title,
    description and an inline JPEG thumbnail."""
    text = wa.ExtendedTextMessage(
        text=content.text,
        matchedText=content.link_url,
        title=content.link_title,
        description=content.link_description,
        previewType=wa.ExtendedTextMessage.PreviewType.NONE,
    )
    if content.link_thumbnail:
        preview = image_preview(content.link_thumbnail, LINK_THUMBNAIL_PIXELS)
        if preview is not None:
            text.JPEGThumbnail, text.thumbnailWidth, text.thumbnailHeight = preview
    return text


def webp_shape(data: bytes) -> tuple[int, int, bool] | None:
    """(width, height, animated) of a WebP sticker; None when Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return width, height, getattr(image, "n_frames", 1) > 1
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None


def contact_name(content: OutgoingContent) -> str:
    """The card's display name: contact_name, else the vCard's FN (formatted name)."""
    if content.contact_name.strip():
        return content.contact_name.strip()
    for line in content.contact_vcard.splitlines():
        field, _, value = line.partition(":")
        if field.split(";")[0].strip().upper() == "FN":
            return value.strip()
    return ""


def ogg_opus_seconds(data: bytes) -> int | None:
    """The length of an Ogg Opus stream in whole seconds (at least 1), from its last page's
    granule position less the pre-skip of its OpusHead (RFC 7845); None when `data` is not
    Ogg Opus. WhatsApp shows it on a voice note before it is downloaded."""
    head = data.find(b"OpusHead", 27, 300)  # the first packet, after the first page's header
    if not data.startswith(b"OggS") or head < 0:
        return None
    pre_skip = int.from_bytes(data[head + 10 : head + 12], "little")
    page = len(data)
    while (page := data.rfind(b"OggS", 0, page)) >= 0:
        # capture pattern, version 0, header type, then the 64-bit granule position
        granule = int.from_bytes(data[page + 6 : page + 14], "little", signed=True)
        if data[page + 4] == 0 and len(data) >= page + 27 and granule >= 0:
            return max(1, round(max(0, granule - pre_skip) / _OPUS_RATE))
    return None


def image_preview(data: bytes, pixels: int = THUMBNAIL_PIXELS) -> tuple[bytes, int, int] | None:
    """(JPEG thumbnail, width, height) of an image: the blurred preview WhatsApp shows before
    the image is downloaded. None when Pillow cannot read it; WhatsApp shows a grey box then."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.thumbnail((pixels, pixels))
            thumbnail = io.BytesIO()
            image.convert("RGB").save(thumbnail, format="JPEG", quality=_THUMBNAIL_QUALITY)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None
    return thumbnail.getvalue(), width, height


# -- whatsmeow's errors ----------------------------------------------------------------------

# whatsmeow's texts (go.mau.fi/whatsmeow, as linked into neonize 0.5.2's library).
_SERVER_ERROR = re.compile(r"server returned error (\d+)")
_BAD_RECIPIENT = (
    "message recipient must be a user JID with no device part",
    "can't send message to unknown server",
)
# The message went out, but no answer came back: WhatsApp may have it.
_NO_ANSWER = (
    "timed out waiting for message send response",
    "returned response",  # "websocket disconnected before message send returned response"
)
# What only says the instance cannot send now (nothing was sent).
_INSTANCE_DOWN = (
    "websocket not connected",
    "client is nil",
    "the store doesn't contain a device JID",
    "can't send presence without PushName set",
)

_SERVER_ERRORS = {"463": "WhatsApp's anti-spam check refused the message"}


def send_error(key: str, text: str) -> EngineError:
    """What a failed SendMessage means: SendRefused when the message itself was refused,
    MaybeSent when it went out unconfirmed, NotConnected or EngineError when nothing was sent
    because the instance could not send."""
    if server_error := _SERVER_ERROR.search(text):
        code = server_error[1]
        why = _SERVER_ERRORS.get(code, "WhatsApp refused the message")
        return SendRefused(code, f"{why} (error {code}, {key})")
    if any(known in text for known in _BAD_RECIPIENT):
        return SendRefused("invalid_recipient", f"WhatsApp cannot send there ({key}): {text}")
    if any(known in text for known in _NO_ANSWER):
        return MaybeSent(
            f"the message went out but WhatsApp did not confirm it ({key}): {text}; "
            "it may have been delivered",
        )
    return _not_sent(key, "could not send", text)


def upload_error(key: str, kind: str, text: str) -> EngineError:
    """What a failed media upload means: the instance is down (EngineError), or WhatsApp's
    media servers refused this file (SendRefused "media_upload_failed")."""
    if any(known in text for known in _INSTANCE_DOWN):
        return _not_sent(key, f"could not upload the {kind}", text)
    return SendRefused("media_upload_failed", f"uploading the {kind} failed ({key}): {text}")


def lookup_error(key: str, text: str) -> EngineError:
    return _not_sent(key, "could not look the recipient up on WhatsApp", text)


def typing_error(key: str, text: str) -> EngineError:
    return _not_sent(key, "could not show typing", text)


def presence_error(key: str, text: str) -> EngineError:
    return _not_sent(key, "could not send the chat presence", text)


def call_error(key: str, text: str) -> EngineError:
    return _not_sent(key, "could not reject the call", text)


def read_error(key: str, text: str) -> EngineError:
    return _not_sent(key, "could not send read receipts", text)


def known_user(user: str, answers: Any) -> str:
    """The number WhatsApp knows for `user`, from its answers (neonize's IsOnWhatsAppResponse
    list) to the lookup of `+user`; SendRefused "not_on_whatsapp" when it has no WhatsApp."""
    for answer in answers:
        if answer.IsIn:
            known = answer.JID
            return str(known.User) if str(known.Server) == USER_SERVER and known.User else user
    raise SendRefused("not_on_whatsapp", f"+{user} is not on WhatsApp")


def _not_sent(key: str, what: str, text: str) -> EngineError:
    if any(known in text for known in _INSTANCE_DOWN):
        return NotConnected(f"{key} {what}: it is not connected to WhatsApp ({text})")
    return EngineError(f"{key} {what}: {text}")


def _on_earth(latitude: float, longitude: float) -> bool:
    return -90 <= latitude <= 90 and -180 <= longitude <= 180  # False for NaN


def _invalid(why: str) -> None:
    raise SendRefused("invalid_content", f"WhatsApp cannot show this message: {why}")


def _media(content: OutgoingContent) -> Media:
    upload = upload_of(content)
    assert upload is not None
    return upload[0]
