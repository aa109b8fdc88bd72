"""neonize's real message events mapped to MessageReceived (sessions/neonize_inbound.py), the
media handle that brings a download back, and the engine delivering inbound messages.

Every event is built with neonize's own protobuf classes, with every field neonize's Go side
fills in (EncodeEventTypesMessage: the event is proto2 and Go's Marshal refuses one with a
required field unset), and passes through the bytes-and-back trip neonize makes before a
handler sees it. The engine part runs in its own interpreter, like the offline tests
(tests/test_neonize_offline.py): neonize's Go side can take a whole process down."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import Report, Scenario, play, run_main
from zapgate.sessions import neonize_inbound, wire
from zapgate.sessions.errors import EngineError, NotConnected
from zapgate.sessions.events import MessageReceived

with warnings.catch_warnings():
    # neonize's import leaks two `uname -a` pipes; pytest would fail on their warnings.
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.events import EVENT_TO_INT, INT_TO_EVENT
    from neonize.proto import Neonize_pb2 as pb
    from neonize.proto.waCommon import WACommon_pb2 as wa_common
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa

KEY = "acme/sales-1"
WA = "s.whatsapp.net"
MESSAGE_ID = "3EB0A9C2F1D4E5B6C7D8"
SENT_AT = 1_790_000_123  # epoch seconds
PUSH_NAME = "Ana Souza"


def jid(user: str, server: str, *, device: int = 0) -> Any:
    """A JID as neonize's Go side encodes one (EncodeJidProto sets every field)."""
    return pb.JID(
        User=user, RawAgent=0, Device=device, Integrator=0, Server=server, IsEmpty=not user
    )


NO_JID = jid("", "")  # whatsmeow's empty JID: nothing known
ANA = jid("5511988887777", WA)
ANA_LID = jid("98765432109876", "lid")
ME = jid("5511999998888", WA)
ME_LID = jid("12345678901234", "lid")
GROUP = jid("120363025246125888", "g.us")


def source(
    *,
    chat: Any = ANA,
    sender: Any = ANA,
    sender_alt: Any = NO_JID,
    recipient_alt: Any = NO_JID,
    from_me: bool = False,
) -> Any:
    """A MessageSource as neonize encodes whatsmeow's (EncodeMessageSource)."""
    by_lid = sender.Server == "lid"
    return pb.MessageSource(
        Chat=chat,
        Sender=sender,
        IsFromMe=from_me,
        IsGroup=chat.Server == "g.us",
        AddressingMode=pb.LID if by_lid else pb.PN,
        SenderAlt=sender_alt,
        RecipientAlt=recipient_alt,
        BroadcastListOwner=NO_JID,
    )


def event(message: Any, of: Any = None, *, timestamp: int = SENT_AT * 1000) -> Any:
    """neonize's Message event for `message` (waE2E.Message), as its handler receives it.
    Timestamps are milliseconds, as neonize's EncodeMessageInfo stamps them (UnixMilli)."""
    info = pb.MessageInfo(
        MessageSource=of if of is not None else source(),
        ID=MESSAGE_ID,
        ServerID=0,
        Type="text",
        Pushname=PUSH_NAME,
        Timestamp=timestamp,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
    )
    built = pb.Message(
        Info=info,
        Message=message,
        IsEphemeral=False,
        IsViewOnce=False,
        IsViewOnceV2=False,
        IsViewOnceV2Extension=False,
        IsDocumentWithCaption=False,
        IsLottieSticker=False,
        IsEdit=False,
        UnavailableRequestID="",
        RetryCount=0,
        Raw=message,
    )
    data = built.SerializeToString()  # raises, like Go's Marshal, if a required field is unset
    return INT_TO_EVENT[EVENT_TO_INT[pb.Message]].FromString(data)


def received(message: Any, of: Any = None, **kwargs: Any) -> MessageReceived | None:
    return neonize_inbound.to_message_received(KEY, event(message, of, **kwargs))


def expected(**fields: Any) -> MessageReceived:
    """A MessageReceived of Ana's one-to-one chat by phone number, with `fields` changed."""
    base: dict[str, Any] = {
        "message_id": MESSAGE_ID,
        "chat_jid": "5511988887777@s.whatsapp.net",
        "sender_jid": "5511988887777@s.whatsapp.net",
        "push_name": PUSH_NAME,
        "timestamp": float(SENT_AT),
    }
    return MessageReceived(KEY, **{**base, **fields})


def wrapped(wrapper: str, inner: Any) -> Any:
    return wa.Message(**{wrapper: wa.FutureProofMessage(message=inner)})


# What whatsmeow's Upload gave the sender, as the media message carries it.
MEDIA_FILE: dict[str, Any] = {
    "URL": "https://mmg.whatsapp.net/v/t62.7118-24/f2/m231/AQNx?ccb=9-4&oh=01_Q5Aa&oe=68A0",
    "directPath": "/v/t62.7118-24/f2/m231/AQNx?ccb=9-4&oh=01_Q5Aa&oe=68A0",
    "mediaKey": bytes(range(32)),
    "fileEncSHA256": bytes(range(32, 64)),
    "fileSHA256": bytes(range(64, 96)),
    "fileLength": 48_213,
    "mediaKeyTimestamp": 1_790_000_100,
}
SHA256_HEX = bytes(range(64, 96)).hex()
REPLY = wa.ContextInfo(
    stanzaID="3EB0C431C26A1916E07E",
    participant="5511999998888@s.whatsapp.net",
    quotedMessage=wa.Message(conversation="Temos o modelo azul?"),
)


# -- one test per kind ---------------------------------------------------------------------


def test_a_conversation_is_text() -> None:
    assert received(wa.Message(conversation="Olá! Ainda tem?")) == expected(
        kind="text", text="Olá! Ainda tem?"
    )


def test_an_extended_text_is_text_with_its_reply_context() -> None:
    reply = wa.ExtendedTextMessage(
        text="Sim, o azul https://loja.example/azul",
        matchedText="https://loja.example/azul",
        contextInfo=REPLY,
    )
    assert received(wa.Message(extendedTextMessage=reply)) == expected(
        kind="text",
        text="Sim, o azul https://loja.example/azul",
        quoted_message_id="3EB0C431C26A1916E07E",
        quoted_sender_jid="5511999998888@s.whatsapp.net",
    )


def test_a_context_without_a_quoted_message_is_no_reply() -> None:
    # Disappearing-message chats put a ContextInfo (with the timer) on every message.
    plain = wa.ExtendedTextMessage(text="Oi", contextInfo=wa.ContextInfo(expiration=604_800))
    assert received(wa.Message(extendedTextMessage=plain)) == expected(kind="text", text="Oi")


def test_an_image() -> None:
    image = wa.ImageMessage(
        mimetype="image/jpeg",
        caption="Catálogo",
        height=1280,
        width=960,
        JPEGThumbnail=b"\xff\xd8" + bytes(900),
        contextInfo=REPLY,
        **MEDIA_FILE,
    )
    mapped = received(wa.Message(imageMessage=image))
    assert mapped is not None
    assert mapped == expected(
        kind="image",
        text="Catálogo",
        media_mime_type="image/jpeg",
        media_size=48_213,
        media_sha256=SHA256_HEX,
        media_ref=mapped.media_ref,  # checked below: what it brings back
        quoted_message_id="3EB0C431C26A1916E07E",
        quoted_sender_jid="5511999998888@s.whatsapp.net",
    )
    assert downloads(mapped.media_ref) == ("imageMessage", cut(image))


def test_a_view_once_video() -> None:
    video = wa.VideoMessage(
        mimetype="video/mp4", caption="Demonstração", seconds=37, gifPlayback=False, **MEDIA_FILE
    )
    mapped = received(wrapped("viewOnceMessageV2", wa.Message(videoMessage=video)))
    assert mapped is not None
    assert mapped == expected(
        kind="video",
        text="Demonstração",
        media_mime_type="video/mp4",
        media_size=48_213,
        media_sha256=SHA256_HEX,
        media_seconds=37,
        media_ref=mapped.media_ref,
        view_once=True,
    )
    assert downloads(mapped.media_ref) == ("videoMessage", cut(video))


def test_a_round_video_note_downloads_as_a_video() -> None:
    note = wa.VideoMessage(mimetype="video/mp4", seconds=12, **MEDIA_FILE)
    mapped = received(wa.Message(ptvMessage=note))
    assert mapped is not None
    assert (mapped.kind, mapped.media_seconds) == ("video", 12)
    # whatsmeow's DownloadAny reads imageMessage, videoMessage, audioMessage, documentMessage
    # and stickerMessage: a ptv is a VideoMessage, downloaded as one.
    assert downloads(mapped.media_ref) == ("videoMessage", cut(note))


def test_an_audio() -> None:
    audio = wa.AudioMessage(mimetype="audio/mpeg", seconds=184, PTT=False, **MEDIA_FILE)
    mapped = received(wa.Message(audioMessage=audio))
    assert mapped is not None
    assert mapped == expected(
        kind="audio",
        media_mime_type="audio/mpeg",
        media_size=48_213,
        media_sha256=SHA256_HEX,
        media_seconds=184,
        media_ref=mapped.media_ref,
    )
    assert downloads(mapped.media_ref) == ("audioMessage", cut(audio))


def test_a_push_to_talk_audio_is_a_voice_note() -> None:
    voice = wa.AudioMessage(
        mimetype="audio/ogg; codecs=opus",
        seconds=9,
        PTT=True,
        waveform=bytes(64),
        contextInfo=REPLY,
        **MEDIA_FILE,
    )
    mapped = received(wrapped("ephemeralMessage", wa.Message(audioMessage=voice)))
    assert mapped is not None
    assert mapped == expected(
        kind="voice_note",
        media_mime_type="audio/ogg; codecs=opus",
        media_size=48_213,
        media_sha256=SHA256_HEX,
        media_seconds=9,
        media_ref=mapped.media_ref,
        quoted_message_id="3EB0C431C26A1916E07E",
        quoted_sender_jid="5511999998888@s.whatsapp.net",
    )
    assert downloads(mapped.media_ref) == ("audioMessage", cut(voice))


def test_a_document_with_a_caption() -> None:
    document = wa.DocumentMessage(
        mimetype="application/pdf",
        title="Proposta.pdf",
        fileName="Proposta.pdf",
        pageCount=3,
        caption="Segue a proposta",
        **MEDIA_FILE,
    )
    mapped = received(wrapped("documentWithCaptionMessage", wa.Message(documentMessage=document)))
    assert mapped is not None
    assert mapped == expected(
        kind="document",
        text="Segue a proposta",
        media_mime_type="application/pdf",
        media_file_name="Proposta.pdf",
        media_size=48_213,
        media_sha256=SHA256_HEX,
        media_ref=mapped.media_ref,
    )
    assert downloads(mapped.media_ref) == ("documentMessage", cut(document))


def test_a_sticker() -> None:
    sticker = wa.StickerMessage(
        mimetype="image/webp", height=512, width=512, isAnimated=False, **MEDIA_FILE
    )
    mapped = received(wa.Message(stickerMessage=sticker))
    assert mapped is not None
    assert mapped == expected(
        kind="sticker",
        media_mime_type="image/webp",
        media_size=48_213,
        media_sha256=SHA256_HEX,
        media_ref=mapped.media_ref,
    )
    assert downloads(mapped.media_ref) == ("stickerMessage", cut(sticker))


def test_a_location() -> None:
    location = wa.LocationMessage(
        degreesLatitude=-23.561414,
        degreesLongitude=-46.655881,
        name="MASP",
        address="Av. Paulista, 1578 - São Paulo",
        contextInfo=REPLY,
    )
    assert received(wa.Message(locationMessage=location)) == expected(
        kind="location",
        latitude=-23.561414,
        longitude=-46.655881,
        location_name="MASP",
        location_address="Av. Paulista, 1578 - São Paulo",
        quoted_message_id="3EB0C431C26A1916E07E",
        quoted_sender_jid="5511999998888@s.whatsapp.net",
    )


def test_a_live_location_is_a_location() -> None:
    live = wa.LiveLocationMessage(
        degreesLatitude=-22.951916, degreesLongitude=-43.210487, caption="A caminho"
    )
    assert received(wa.Message(liveLocationMessage=live)) == expected(
        kind="location", latitude=-22.951916, longitude=-43.210487, text="A caminho"
    )


VCARD = (
    "BEGIN:VCARD\nVERSION:3.0\nFN:Bruno Lima\n"
    "TEL;type=CELL;waid=5521977776666:+55 21 97777-6666\nEND:VCARD"
)
VCARD_2 = "BEGIN:VCARD\nVERSION:3.0\nFN:Carla Dias\nTEL;type=CELL:+55 31 96666-5555\nEND:VCARD"


def test_a_contact_card() -> None:
    card = wa.ContactMessage(displayName="Bruno Lima", vcard=VCARD)
    assert received(wa.Message(contactMessage=card)) == expected(
        kind="contact", contact_name="Bruno Lima", contact_vcard=VCARD
    )


def test_several_contact_cards_are_one_vcard_stream() -> None:
    cards = wa.ContactsArrayMessage(
        displayName="",
        contacts=[
            wa.ContactMessage(displayName="Bruno Lima", vcard=VCARD),
            wa.ContactMessage(displayName="Carla Dias", vcard=VCARD_2),
        ],
    )
    assert received(wa.Message(contactsArrayMessage=cards)) == expected(
        kind="contact", contact_name="Bruno Lima, Carla Dias", contact_vcard=f"{VCARD}\n{VCARD_2}"
    )


def reaction(emoji: str) -> Any:
    key = wa_common.MessageKey(
        remoteJID="5511988887777@s.whatsapp.net", fromMe=True, ID="3EB0C431C26A1916E07E"
    )
    return wa.Message(
        reactionMessage=wa.ReactionMessage(
            key=key, text=emoji, senderTimestampMS=SENT_AT * 1000 + 5
        )
    )


def test_a_reaction_names_the_message_it_reacts_to() -> None:
    assert received(reaction("👍")) == expected(
        kind="reaction", reaction_emoji="👍", reacted_message_id="3EB0C431C26A1916E07E"
    )


def test_a_reaction_with_no_emoji_removes_the_reaction() -> None:
    assert received(reaction("")) == expected(
        kind="reaction", reaction_emoji="", reacted_message_id="3EB0C431C26A1916E07E"
    )


def test_a_kind_zapgate_does_not_read_is_unknown() -> None:
    invite = wa.GroupInviteMessage(groupJID="120363025246125888@g.us", inviteCode="AbCd")
    assert received(wa.Message(groupInviteMessage=invite)) == expected(kind="unknown")
    assert received(wa.Message()) is None  # no content at all


def ephemeral_setting(seconds: int) -> Any:
    """Disappearing messages switched, as a phone sends it (whatsmeow delivers it as the
    message's protocolMessage, wrapped in an ephemeralMessage once the timer is on)."""
    setting = wa.ProtocolMessage(
        type=wa.ProtocolMessage.EPHEMERAL_SETTING, ephemeralExpiration=seconds
    )
    return wa.Message(protocolMessage=setting)


def test_disappearing_messages_switched_on_carry_the_timer() -> None:
    assert received(ephemeral_setting(604_800)) == expected(
        kind="ephemeral_setting", ephemeral_seconds=604_800
    )
    inside = wrapped("ephemeralMessage", ephemeral_setting(86_400))
    assert received(inside) == expected(kind="ephemeral_setting", ephemeral_seconds=86_400)


def test_disappearing_messages_switched_off_in_a_group_name_who_did_it() -> None:
    of = source(chat=GROUP, sender=jid("98765432109876", "lid", device=3), sender_alt=ANA)
    assert received(ephemeral_setting(0), of) == expected(
        kind="ephemeral_setting",
        ephemeral_seconds=0,
        chat_jid="120363025246125888@g.us",
        group_jid="120363025246125888@g.us",
        sender_lid="98765432109876@lid",
    )


EDITED_ID = "3EB0C431C26A1916E07E"


def edit(new: Any) -> Any:
    """An edit as WhatsApp's apps send it (whatsmeow's BuildEdit): a MESSAGE_EDIT protocol
    message inside the editedMessage wrapper."""
    protocol = wa.ProtocolMessage(
        type=wa.ProtocolMessage.MESSAGE_EDIT,
        key=wa_common.MessageKey(remoteJID="5511988887777@s.whatsapp.net", ID=EDITED_ID),
        editedMessage=new,
        timestampMS=SENT_AT * 1000 + 9,
    )
    return wrapped("editedMessage", wa.Message(protocolMessage=protocol))


def test_an_edit_names_the_edited_message_and_carries_its_new_text() -> None:
    want = expected(kind="edit", text="see you at 6", target_message_id=EDITED_ID)
    assert received(edit(wa.Message(conversation="see you at 6"))) == want
    extended = wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text="see you at 6"))
    assert received(edit(extended)) == want
    # whatsmeow's UnwrapRaw may already have taken the protocol message out of its wrapper.
    unwrapped = edit(wa.Message(conversation="see you at 6")).editedMessage.message
    assert received(unwrapped) == want


def test_an_edited_caption_is_the_new_text() -> None:
    image = wa.Message(imageMessage=wa.ImageMessage(caption="the blue one", **MEDIA_FILE))
    assert received(edit(image)) == expected(
        kind="edit", text="the blue one", target_message_id=EDITED_ID
    )


def test_a_deletion_for_everyone_names_the_deleted_message() -> None:
    revoke = wa.ProtocolMessage(
        type=wa.ProtocolMessage.REVOKE,
        key=wa_common.MessageKey(remoteJID="5511988887777@s.whatsapp.net", ID="3EB0AAAA"),
    )
    assert received(wa.Message(protocolMessage=revoke)) == expected(
        kind="revoke", target_message_id="3EB0AAAA"
    )
    # A group admin deleting someone's message: the admin is the sender.
    of = source(chat=GROUP, sender=jid("98765432109876", "lid", device=2), sender_alt=ANA)
    mapped = received(wa.Message(protocolMessage=revoke), of)
    assert mapped is not None
    assert (mapped.kind, mapped.target_message_id) == ("revoke", "3EB0AAAA")
    assert (mapped.sender_jid, mapped.sender_lid) == (
        "5511988887777@s.whatsapp.net",
        "98765432109876@lid",
    )


def test_device_to_device_traffic_is_no_message() -> None:
    # A group's sender key reaches each device apart from the content: whatsmeow dispatches
    # it as a message of its own, with the same id as the content that follows.
    key_only = wa.Message(
        senderKeyDistributionMessage=wa.SenderKeyDistributionMessage(
            groupID="120363025246125888@g.us", axolotlSenderKeyDistributionMessage=bytes(40)
        ),
        messageContextInfo=wa.MessageContextInfo(messageSecret=bytes(32)),
    )
    assert received(key_only, source(chat=GROUP, sender=ANA)) is None
    history = wa.ProtocolMessage(type=wa.ProtocolMessage.HISTORY_SYNC_NOTIFICATION)
    assert received(wa.Message(protocolMessage=history), source(from_me=True)) is None
    keys = wa.ProtocolMessage(type=wa.ProtocolMessage.APP_STATE_SYNC_KEY_SHARE)
    assert received(wa.Message(protocolMessage=keys), source(from_me=True)) is None


# -- who, where, when ------------------------------------------------------------------------


def test_a_group_message_names_the_group_and_the_sender_by_phone_and_lid() -> None:
    # A LID-addressed group: the participant is a LID, its number the SenderAlt.
    of = source(chat=GROUP, sender=jid("98765432109876", "lid", device=4), sender_alt=ANA)
    assert received(wa.Message(conversation="Bom dia, grupo"), of) == expected(
        chat_jid="120363025246125888@g.us",
        group_jid="120363025246125888@g.us",
        sender_jid="5511988887777@s.whatsapp.net",
        sender_lid="98765432109876@lid",
        kind="text",
        text="Bom dia, grupo",
    )


def test_a_phone_addressed_group_message_knows_the_lid_from_the_alternate() -> None:
    of = source(chat=GROUP, sender=jid("5511988887777", WA, device=2), sender_alt=ANA_LID)
    mapped = received(wa.Message(conversation="Oi"), of)
    assert mapped is not None
    assert (mapped.sender_jid, mapped.sender_lid, mapped.group_jid) == (
        "5511988887777@s.whatsapp.net",
        "98765432109876@lid",
        "120363025246125888@g.us",
    )


def test_a_chat_addressed_by_lid_is_named_by_phone_when_known() -> None:
    of = source(chat=ANA_LID, sender=ANA_LID, sender_alt=ANA)
    assert received(wa.Message(conversation="Oi"), of) == expected(
        sender_lid="98765432109876@lid", kind="text", text="Oi"
    )


def test_without_a_known_phone_number_the_lid_is_the_address() -> None:
    of = source(chat=ANA_LID, sender=ANA_LID)
    assert received(wa.Message(conversation="Oi"), of) == expected(
        chat_jid="98765432109876@lid",
        sender_jid="98765432109876@lid",
        sender_lid="98765432109876@lid",
        kind="text",
        text="Oi",
    )


def test_a_message_sent_from_the_linked_phone_is_from_me() -> None:
    # The phone's copy reaches this device wrapped in a DeviceSentMessage; the chat is the
    # recipient, by LID here, with the number as RecipientAlt.
    sent = wa.Message(
        deviceSentMessage=wa.DeviceSentMessage(
            destinationJID="5511988887777@s.whatsapp.net",
            message=wa.Message(conversation="Já envio o boleto"),
        )
    )
    of = source(
        chat=ANA_LID,
        sender=ME_LID,
        sender_alt=ME,
        recipient_alt=ANA,
        from_me=True,
    )
    assert received(sent, of) == expected(
        sender_jid="5511999998888@s.whatsapp.net",
        sender_lid="12345678901234@lid",
        from_me=True,
        kind="text",
        text="Já envio o boleto",
    )


def test_the_timestamp_is_in_seconds_whether_neonize_sends_milliseconds_or_seconds() -> None:
    message = wa.Message(conversation="Oi")
    in_millis = received(message, timestamp=SENT_AT * 1000 + 250)
    in_seconds = received(message, timestamp=SENT_AT)  # neonize builds before UnixMilli
    assert in_millis is not None
    assert in_seconds is not None
    assert (in_millis.timestamp, in_seconds.timestamp) == (SENT_AT + 0.25, float(SENT_AT))


def test_a_mapped_message_crosses_the_worker_socket_as_json() -> None:
    image = wa.ImageMessage(mimetype="image/png", **MEDIA_FILE)
    mapped = received(wa.Message(imageMessage=image))
    assert mapped is not None
    assert wire.decode(wire.encode(mapped)) == mapped
    poll = wa.PollCreationMessage(
        name="Q", options=[wa.PollCreationMessage.Option(optionName=o) for o in ("a", "b")]
    )
    mapped = received(wa.Message(pollCreationMessage=poll))
    assert mapped is not None
    assert wire.decode(wire.encode(mapped)) == mapped  # JSON lists come back as tuples


# -- media handles ---------------------------------------------------------------------------

# What whatsmeow's Download reads of a media message (and its MIME type).
DOWNLOAD_FIELDS = (
    "URL",
    "directPath",
    "mediaKey",
    "fileEncSHA256",
    "fileSHA256",
    "fileLength",
    "mediaKeyTimestamp",
    "mimetype",
)


def cut(media: Any) -> Any:
    """`media` with only the fields a download needs: thumbnails, captions and quoted
    messages stay out of the handle."""
    kept = type(media)()
    for name in DOWNLOAD_FIELDS:
        if media.HasField(name):
            setattr(kept, name, getattr(media, name))
    return kept


def downloads(ref: str) -> tuple[str, Any]:
    """What neonize's download_any is handed for `ref`, as Go parses it: the one field set
    and its media message."""
    message = wa.Message.FromString(neonize_inbound.download_message(ref).SerializeToString())
    [(field, media)] = [(field.name, value) for field, value in message.ListFields()]
    return field, media


def test_a_media_handle_keeps_every_download_field_and_nothing_else() -> None:
    image = wa.ImageMessage(
        mimetype="image/jpeg",
        caption="x",
        JPEGThumbnail=bytes(5000),
        contextInfo=REPLY,
        **MEDIA_FILE,
    )
    mapped = received(wa.Message(imageMessage=image))
    assert mapped is not None
    field, media = downloads(mapped.media_ref)
    assert field == "imageMessage"
    assert media == cut(image)
    assert {name: getattr(media, name) for name in MEDIA_FILE} == MEDIA_FILE
    assert len(mapped.media_ref) < 400  # the 5 kB thumbnail stayed out


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "not a reference",
        "wa1:imageMessage:",  # nothing encoded
        "wa2:imageMessage:CgF1",  # another version
        "wa1:extendedTextMessage:CgF1",  # nothing to download there
        "wa1:imageMessage:@@@@",  # not base64
        "wa1:imageMessage:" + base64.urlsafe_b64encode(b"\x0a\xff\xff").decode(),  # cut short
    ],
)
def test_a_string_that_is_no_media_handle_is_refused_before_go_sees_it(ref: str) -> None:
    with pytest.raises(EngineError, match="media reference"):
        neonize_inbound.download_message(ref)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("failed to refresh media connections: client is nil", "it is not connected"),
        ("download failed with status code 404", "no longer on WhatsApp's servers"),
        ("download failed with status code 410", "no longer on WhatsApp's servers"),
        ("invalid media hmac", "could not download the media: invalid media hmac"),
    ],
)
def test_download_errors_say_what_happened(text: str, says: str) -> None:
    error = neonize_inbound.download_error(KEY, text)
    assert type(error) is (NotConnected if "not connected" in says else EngineError)
    assert says in str(error)
    assert text in str(error)


# -- the engine: inbound messages reach the sink ---------------------------------------------


def test_inbound_messages_reach_the_sink_and_one_unreadable_message_is_dropped(
    tmp_path: Path,
) -> None:
    report = play("tests.test_neonize_inbound", "deliver", tmp_path)

    # Delivered through neonize's own event callback, as Go calls it.
    assert [event["type"] for event in report["events"]] == ["MessageReceived"] * 2
    first, after = report["events"]
    assert (first["key"], first["kind"], first["text"]) == ("acme/inbound", "text", "Olá")
    assert first["sender_jid"] == "5511988887777@s.whatsapp.net"
    assert first["sender_lid"] == "98765432109876@lid"
    assert first["timestamp"] == SENT_AT
    assert (after["message_id"], after["text"]) == ("AFTER", "Ainda aqui")
    # The message in between made the mapping fail: logged with its traceback, dropped.
    [logged] = report["logged"]
    assert "dropped an inbound message" in logged["message"]
    assert "mapping failed on purpose" in logged["exception"]
    assert report["hosted_after"] == 0


def deliver(client: Any, message: Any) -> None:
    """neonize's event callback, called the way Go calls it (any neonize event type)."""
    data = message.SerializeToString()
    buffer = ctypes.create_string_buffer(data, len(data))
    client.event.execute(
        client.uuid, ctypes.addressof(buffer), len(data), EVENT_TO_INT[type(message)]
    )


async def deliver_scenario(workdir: Path) -> Report:
    from tests.test_neonize_offline import Events, FakeProxy, spec
    from zapgate.sessions.neonize_engine import NeonizeEngine

    logged: list[Report] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            exception = (
                logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
            )
            logged.append({"message": record.getMessage(), "exception": exception})

    logging.getLogger("zapgate.sessions.neonize_session").addHandler(Recorder())
    mapping = neonize_inbound.to_message_received

    def failing_on_boom(key: str, event: Any) -> MessageReceived | None:
        if event.Info.ID == "BOOM":
            raise ValueError("mapping failed on purpose")
        return mapping(key, event)

    neonize_inbound.to_message_received = failing_on_boom
    events = Events()
    engine = NeonizeEngine(events)
    async with FakeProxy(hold=3.0) as slow:
        dialing = spec(workdir, "acme/inbound", slow.url("socks5"))
        await engine.start(dialing)
        await slow.reached.wait()
        client = engine._sessions[dialing.key].client
        by_lid = source(chat=ANA_LID, sender=ANA_LID, sender_alt=ANA)
        deliver(client, event(wa.Message(conversation="Olá"), by_lid))
        deliver(client, with_id(event(wa.Message(conversation="x")), "BOOM"))
        deliver(client, with_id(event(wa.Message(conversation="Ainda aqui")), "AFTER"))
        await events.until(lambda: len(events.items) == 2)
        await asyncio.sleep(0.2)  # nothing else arrives
        await engine.stop(dialing.key)
    report = {"events": events.dump(), "logged": logged, "hosted_after": engine.hosted()}
    await engine.close()
    return report


def with_id(message: Any, message_id: str) -> Any:
    message.Info.ID = message_id
    return message


SCENARIOS: dict[str, Scenario] = {"deliver": deliver_scenario}


if __name__ == "__main__":
    run_main(SCENARIOS)
