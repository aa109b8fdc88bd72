"""Outgoing messages built as neonize's real protobufs (sessions/neonize_send.py), and
whatsmeow's send errors mapped to zapgate's.

Media messages are built from a real neonize UploadResponse carrying what whatsmeow's Upload
returns: the upload itself needs WhatsApp's media servers (tests/test_neonize_offline.py shows
it fails cleanly without them). Every built message goes through the bytes-and-back trip
neonize makes to hand it to Go. Go itself parsing these bytes is checked in the offline
scenario (it answers "client is nil" only after it has parsed the recipient and message)."""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import pytest
from PIL import Image

from zapgate.engine.v1 import worker_pb2
from zapgate.sessions import neonize_send
from zapgate.sessions.engine import Media, OutgoingContent
from zapgate.sessions.errors import EngineError, MaybeSent, NotConnected, SendRefused

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto import Neonize_pb2 as pb
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa
    from neonize.utils.enum import ChatPresence, ChatPresenceMedia, MediaType

KEY = "acme/sales-1"
WA = "s.whatsapp.net"
NOW = 1_790_000_000.7
VCARD = (
    "BEGIN:VCARD\nVERSION:3.0\nFN:Ana Souza\n"
    "TEL;type=CELL;waid=5511988887777:+5511988887777\nEND:VCARD"
)

# What whatsmeow's Upload answers (EncodeUploadResponse sets every field).
UPLOADED = pb.UploadResponse(
    url="https://mmg.whatsapp.net/o1/v/t62.7118-24/f1/m231/abc?ccb=9-4&oh=01&oe=68A0",
    DirectPath="/o1/v/t62.7118-24/f1/m231/abc?ccb=9-4&oh=01&oe=68A0",
    Handle="",
    MediaKey=bytes(range(32)),
    FileEncSHA256=bytes(range(32, 64)),
    FileSHA256=bytes(range(64, 96)),
    FileLength=48_213,
)


def over_the_wire(message: Any) -> Any:
    """The message as Go receives it from neonize's send_message (SerializeToString raises on
    anything that cannot be encoded)."""
    return wa.Message.FromString(message.SerializeToString())


def built(content: OutgoingContent) -> Any:
    uploaded = UPLOADED if neonize_send.upload_of(content) is not None else None
    return over_the_wire(neonize_send.build_message(content, uploaded, now=NOW))


def refusal(call: Any, *args: Any) -> SendRefused:
    with pytest.raises(SendRefused) as refused:
        call(*args)
    return refused.value


def png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 90))
    data = io.BytesIO()
    image.save(data, format="PNG")
    return data.getvalue()


# -- Ogg Opus, as an encoder writes it (RFC 3533 pages, RFC 7845 headers) --------------------


def ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def ogg_page(payload: bytes, granule: int, sequence: int, header_type: int = 0) -> bytes:
    assert len(payload) < 255
    header = (
        b"OggS"
        + bytes([0, header_type])
        + granule.to_bytes(8, "little", signed=True)
        + (0x5A9).to_bytes(4, "little")  # stream serial number
        + sequence.to_bytes(4, "little")
        + b"\0\0\0\0"  # CRC, computed over the page with this field zero
        + bytes([1, len(payload)])
    )
    page = header + payload
    return page[:22] + ogg_crc(page).to_bytes(4, "little") + page[26:]


def ogg_opus(seconds: float, pre_skip: int = 312, last_granule: int | None = None) -> bytes:
    """A mono Ogg Opus stream of `seconds` (its audio packets are stand-ins: only the pages'
    granule positions tell a stream's length)."""
    head = (
        b"OpusHead"
        + bytes([1, 1])
        + pre_skip.to_bytes(2, "little")
        + (48_000).to_bytes(4, "little")
        + b"\0\0\0"
    )
    tags = b"OpusTags" + (8).to_bytes(4, "little") + b"zapgate1" + (0).to_bytes(4, "little")
    end = pre_skip + round(seconds * 48_000)
    pages = [ogg_page(head, 0, 0, header_type=2), ogg_page(tags, 0, 1)]
    pages += [ogg_page(b"\xfc" + bytes(40), end // 2, 2), ogg_page(b"\xfc" + bytes(40), end, 3)]
    if last_granule is not None:
        pages.append(ogg_page(b"\xfc" + bytes(40), last_granule, 4, header_type=4))
    return b"".join(pages)


# -- recipients ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "user", "server"),
    [
        ("5511999998888@s.whatsapp.net", "5511999998888", "s.whatsapp.net"),
        ("5511999998888:12@s.whatsapp.net", "5511999998888", "s.whatsapp.net"),
        ("123456789012345@lid", "123456789012345", "lid"),
        ("123456789012345:3@lid", "123456789012345", "lid"),
        ("120363025246125888@g.us", "120363025246125888", "g.us"),
        ("5511999998888-1602712345@g.us", "5511999998888-1602712345", "g.us"),
    ],
)
def test_recipients_become_complete_jids_without_a_device(
    text: str, user: str, server: str
) -> None:
    to = neonize_send.parse_recipient(text)
    # Go's Unmarshal refuses neonize's proto2 JID with a required field unset.
    parsed = pb.JID.FromString(to.SerializeToString())
    assert (parsed.User, parsed.Server) == (user, server)
    assert (parsed.Device, parsed.RawAgent, parsed.Integrator, parsed.IsEmpty) == (0, 0, 0, False)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5511999998888",
        "+5511999998888@s.whatsapp.net",
        "5511999998888@c.us",
        "status@broadcast",
        "abc@s.whatsapp.net",
        "5511999998888@s.whatsapp.net ",
        "120363025246125888@newsletter",
    ],
)
def test_anything_else_is_refused_as_an_invalid_recipient(text: str) -> None:
    refused = refusal(neonize_send.parse_recipient, text)
    assert refused.code == "invalid_recipient"
    assert repr(text) in str(refused)


def test_only_phone_number_jids_have_a_number_to_look_up() -> None:
    assert (
        neonize_send.phone_user(neonize_send.parse_recipient("5511999998888@s.whatsapp.net"))
        == "5511999998888"
    )
    assert neonize_send.phone_user(neonize_send.parse_recipient("123456789012345@lid")) == ""
    assert neonize_send.phone_user(neonize_send.parse_recipient("120363025246125888@g.us")) == ""


def test_typing_is_composing_text_and_stopping_is_paused() -> None:
    assert neonize_send.typing_state(True) == (
        ChatPresence.CHAT_PRESENCE_COMPOSING,
        ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT,
    )
    assert neonize_send.typing_state(False) == (
        ChatPresence.CHAT_PRESENCE_PAUSED,
        ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT,
    )


# -- text, location, contact ---------------------------------------------------------------


def test_text_is_a_plain_conversation_message() -> None:
    message = built(OutgoingContent(text="Olá, Ana! Seu pedido @5511988887777 saiu."))
    # No extended text, no context info (neonize's send_message would add mentions from "@..."):
    assert [field.name for field, _ in message.ListFields()] == ["conversation"]
    assert message.conversation == "Olá, Ana! Seu pedido @5511988887777 saiu."
    assert neonize_send.upload_of(OutgoingContent(text="hi")) is None


@pytest.mark.parametrize("text", ["", "  \n "])
def test_empty_text_is_refused(text: str) -> None:
    refused = refusal(neonize_send.build_message, OutgoingContent(text=text))
    assert refused.code == "invalid_content"
    assert "empty" in str(refused)


def test_location_carries_coordinates_name_and_address() -> None:
    content = OutgoingContent(
        latitude=-23.561414,
        longitude=-46.655881,
        location_name="MASP",
        location_address="Av. Paulista, 1578 - Bela Vista, São Paulo",
    )
    message = built(content)
    location = message.locationMessage
    assert [field.name for field, _ in message.ListFields()] == ["locationMessage"]
    assert (location.degreesLatitude, location.degreesLongitude) == (-23.561414, -46.655881)
    assert location.name == "MASP"
    assert location.address == "Av. Paulista, 1578 - Bela Vista, São Paulo"


def test_a_bare_location_has_no_name_or_address() -> None:
    location = built(OutgoingContent(latitude=0.0, longitude=0.0)).locationMessage
    assert (location.degreesLatitude, location.degreesLongitude) == (0.0, 0.0)
    assert not location.HasField("name")
    assert not location.HasField("address")


@pytest.mark.parametrize(
    ("latitude", "longitude"),
    [(90.5, 0.0), (-91.0, 10.0), (10.0, 180.5), (math.nan, 0.0), (0.0, math.inf), (10.0, None)],
)
def test_coordinates_off_the_earth_are_refused(latitude: float, longitude: float | None) -> None:
    content = OutgoingContent(latitude=latitude, longitude=longitude)
    assert refusal(neonize_send.build_message, content).code == "invalid_content"


def test_contact_card_carries_the_name_and_the_vcard() -> None:
    card = built(
        OutgoingContent(contact_name="Ana Souza (vendas)", contact_vcard=VCARD)
    ).contactMessage
    assert card.displayName == "Ana Souza (vendas)"
    assert card.vcard == VCARD


def test_contact_card_without_a_name_takes_the_vcards_formatted_name() -> None:
    card = built(
        OutgoingContent(contact_vcard=VCARD.replace("FN:", "fn;CHARSET=UTF-8:"))
    ).contactMessage
    assert card.displayName == "Ana Souza"


def test_contact_card_with_no_name_at_all_is_refused() -> None:
    vcard = "BEGIN:VCARD\nVERSION:3.0\nTEL:+5511988887777\nEND:VCARD"
    refused = refusal(neonize_send.build_message, OutgoingContent(contact_vcard=vcard))
    assert refused.code == "invalid_content"
    assert "no name" in str(refused)


# -- media -----------------------------------------------------------------------------------


def assert_points_at_the_upload(media: Any) -> None:
    assert (media.URL, media.directPath) == (UPLOADED.url, UPLOADED.DirectPath)
    assert media.mediaKey == UPLOADED.MediaKey
    assert media.fileEncSHA256 == UPLOADED.FileEncSHA256
    assert media.fileSHA256 == UPLOADED.FileSHA256
    assert media.fileLength == 48_213
    assert media.mediaKeyTimestamp == 1_790_000_000


@pytest.mark.parametrize(
    ("kind", "media_type"),
    [
        ("image", MediaType.MediaImage),
        ("video", MediaType.MediaVideo),
        ("audio", MediaType.MediaAudio),
        ("document", MediaType.MediaDocument),
    ],
)
def test_each_media_kind_is_uploaded_as_its_own_media_type(kind: str, media_type: Any) -> None:
    media = Media(data=b"\x00\x01", mime_type="application/x-test")
    assert neonize_send.upload_of(OutgoingContent(**{kind: media})) == (media, media_type)


def test_image_points_at_the_upload_and_carries_a_small_jpeg_preview() -> None:
    image = Media(data=png(640, 480), mime_type="image/png", caption="Catálogo de verão")
    message = built(OutgoingContent(image=image))
    sent = message.imageMessage
    assert [field.name for field, _ in message.ListFields()] == ["imageMessage"]
    assert_points_at_the_upload(sent)
    assert sent.mimetype == "image/png"
    assert sent.caption == "Catálogo de verão"
    assert (sent.width, sent.height) == (640, 480)
    with Image.open(io.BytesIO(sent.JPEGThumbnail)) as preview:
        assert preview.format == "JPEG"
        assert preview.size == (72, 54)  # the longest side at 72 px, the aspect kept
    # None of the thumbnail-upload fields: the preview travels inline.
    assert not sent.HasField("thumbnailDirectPath")
    assert not sent.HasField("thumbnailSHA256")


def test_an_image_pillow_cannot_read_goes_without_a_preview() -> None:
    image = Media(data=b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64), mime_type="image/jp2")
    sent = built(OutgoingContent(image=image)).imageMessage
    assert_points_at_the_upload(sent)
    assert not sent.HasField("JPEGThumbnail")
    assert not sent.HasField("width")
    assert not sent.HasField("caption")


def test_video_points_at_the_upload_with_its_caption() -> None:
    video = Media(
        data=b"\x00\x00\x00\x18ftypmp42" + bytes(100), mime_type="video/mp4", caption="Demo"
    )
    sent = built(OutgoingContent(video=video)).videoMessage
    assert_points_at_the_upload(sent)
    assert (sent.mimetype, sent.caption) == ("video/mp4", "Demo")
    # Length and preview need ffmpeg, which a worker does not have: left to WhatsApp's apps.
    assert not sent.HasField("seconds")
    assert not sent.HasField("JPEGThumbnail")


def test_audio_file_is_not_a_voice_note() -> None:
    audio = Media(data=b"ID3\x04\x00" + bytes(200), mime_type="audio/mpeg")
    sent = built(OutgoingContent(audio=audio)).audioMessage
    assert_points_at_the_upload(sent)
    assert sent.mimetype == "audio/mpeg"
    assert sent.PTT is False
    assert not sent.HasField("seconds")


def test_voice_note_is_push_to_talk_opus_with_its_length() -> None:
    audio = Media(data=ogg_opus(seconds=7.4), mime_type="audio/ogg")
    sent = built(OutgoingContent(audio=audio, voice_note=True)).audioMessage
    assert_points_at_the_upload(sent)
    assert sent.PTT is True
    assert sent.mimetype == "audio/ogg; codecs=opus"
    assert sent.seconds == 7


def test_opus_audio_file_also_gets_its_length() -> None:
    audio = Media(data=ogg_opus(seconds=61.6), mime_type="audio/ogg")
    sent = built(OutgoingContent(audio=audio)).audioMessage
    assert (sent.PTT, sent.mimetype, sent.seconds) == (False, "audio/ogg", 62)


@pytest.mark.parametrize(
    "data",
    [b"ID3\x04\x00" + bytes(200), ogg_opus(3.0).replace(b"OpusHead", b"\x01vorbis\x00"), b""],
)
def test_a_voice_note_that_is_not_ogg_opus_is_refused(data: bytes) -> None:
    content = OutgoingContent(audio=Media(data=data, mime_type="audio/mpeg"), voice_note=True)
    refused = refusal(neonize_send.check_content, content)
    assert refused.code == "invalid_content"


def test_document_carries_file_name_mime_type_and_caption() -> None:
    document = Media(
        data=b"%PDF-1.7\n" + bytes(300),
        mime_type="application/pdf",
        file_name="Proposta 2026.pdf",
        caption="Segue a proposta",
    )
    sent = built(OutgoingContent(document=document)).documentMessage
    assert_points_at_the_upload(sent)
    assert sent.mimetype == "application/pdf"
    assert (sent.fileName, sent.title) == ("Proposta 2026.pdf", "Proposta 2026.pdf")
    assert sent.caption == "Segue a proposta"


def test_document_without_a_file_name_is_still_named() -> None:
    document = Media(data=b"a,b\n1,2\n", mime_type="text/csv")
    sent = built(OutgoingContent(document=document)).documentMessage
    assert sent.fileName == "file"
    assert not sent.HasField("caption")


@pytest.mark.parametrize(
    ("media", "why"),
    [
        (Media(data=b"", mime_type="image/png"), "no data"),
        (Media(data=b"\x89PNG", mime_type=""), "not a MIME type"),
        (Media(data=b"\x89PNG", mime_type="png"), "not a MIME type"),
    ],
)
def test_media_without_data_or_mime_type_is_refused(media: Media, why: str) -> None:
    refused = refusal(neonize_send.build_message, OutgoingContent(image=media), UPLOADED)
    assert refused.code == "invalid_content"
    assert why in str(refused)


def test_media_cannot_be_built_before_its_upload() -> None:
    with pytest.raises(ValueError, match="UploadResponse"):
        neonize_send.build_message(OutgoingContent(document=Media(b"x", "text/plain")))


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.2, 1), (1.49, 1), (1.5, 2), (29.9, 30), (3600.0, 3600)]
)
def test_ogg_opus_length_is_the_last_granule_less_the_pre_skip(seconds: float, shown: int) -> None:
    assert neonize_send.ogg_opus_seconds(ogg_opus(seconds)) == shown
    assert neonize_send.ogg_opus_seconds(ogg_opus(seconds, pre_skip=3840)) == shown


def test_ogg_opus_length_skips_a_last_page_without_a_granule() -> None:
    # -1: no packet ends on that page (RFC 3533); the page before it tells the length.
    assert neonize_send.ogg_opus_seconds(ogg_opus(12.0, last_granule=-1)) == 12


@pytest.mark.parametrize(
    "data", [b"", b"OggS", b"RIFF\x00\x00WAVEfmt " + bytes(64), ogg_opus(2.0)[:27] + bytes(100)]
)
def test_what_is_not_ogg_opus_has_no_opus_length(data: bytes) -> None:
    assert neonize_send.ogg_opus_seconds(data) is None


# -- whatsmeow's errors ----------------------------------------------------------------------


def test_error_463_is_whatsapps_anti_spam_refusal() -> None:
    refused = neonize_send.send_error(KEY, "server returned error 463")
    assert isinstance(refused, SendRefused)
    assert refused.code == "463"
    assert "anti-spam" in str(refused)
    assert KEY in str(refused)


def test_other_server_errors_keep_their_code() -> None:
    refused = neonize_send.send_error(KEY, "server returned error 479")
    assert isinstance(refused, SendRefused)
    assert refused.code == "479"
    assert "error 479" in str(refused)


@pytest.mark.parametrize(
    "text",
    [
        "message recipient must be a user JID with no device part",
        "can't send message to unknown server broadcast",
    ],
)
def test_recipients_whatsmeow_cannot_send_to_are_refused(text: str) -> None:
    refused = neonize_send.send_error(KEY, text)
    assert isinstance(refused, SendRefused)
    assert refused.code == "invalid_recipient"


@pytest.mark.parametrize(
    "text",
    [
        "timed out waiting for message send response",
        "websocket disconnected before message send returned response",
    ],
)
def test_a_send_without_an_answer_may_have_been_delivered(text: str) -> None:
    maybe = neonize_send.send_error(KEY, text)
    assert type(maybe) is MaybeSent
    assert maybe.kind == worker_pb2.ENGINE_ERROR_KIND_MAYBE_SENT
    assert "may have been delivered" in str(maybe)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("websocket not connected", "not connected to WhatsApp"),
        ("client is nil", "not connected to WhatsApp"),
        ("the store doesn't contain a device JID", "not connected to WhatsApp"),
        ("failed to send message node: websocket not connected", "not connected to WhatsApp"),
        ("failed to get device list: info query timed out", "info query timed out"),
    ],
)
def test_nothing_sent_because_the_instance_could_not_send_is_an_engine_error(
    text: str, says: str
) -> None:
    error = neonize_send.send_error(KEY, text)
    # Not connected is its own type: the dispatcher queues the message again for it.
    assert type(error) is (NotConnected if "connected" in says else EngineError)
    assert says in str(error)
    assert str(error).startswith(f"{KEY} could not send")


def test_an_upload_refused_by_the_media_servers_refuses_the_message() -> None:
    refused = neonize_send.upload_error(KEY, "video", "upload failed with status code 413")
    assert isinstance(refused, SendRefused)
    assert refused.code == "media_upload_failed"
    assert "uploading the video failed" in str(refused)


def test_an_upload_without_a_connection_is_an_engine_error() -> None:
    error = neonize_send.upload_error(
        KEY, "image", "failed to refresh media connections: websocket not connected"
    )
    assert type(error) is NotConnected
    assert "could not upload the image: it is not connected" in str(error)


def looked_up(query: str, user: str, *, on_whatsapp: bool) -> Any:
    """One answer of WhatsApp's number lookup, as neonize encodes it (EncodeIsOnWhatsApp)."""
    return pb.IsOnWhatsAppResponse(
        Query=query,
        JID=pb.JID(User=user, RawAgent=0, Device=0, Integrator=0, Server=WA, IsEmpty=False),
        IsIn=on_whatsapp,
    )


def test_a_number_on_whatsapp_is_sent_to_as_whatsapp_knows_it() -> None:
    same = [looked_up("+5511988887777", "5511988887777", on_whatsapp=True)]
    assert neonize_send.known_user("5511988887777", same) == "5511988887777"
    # A Brazilian mobile registered before the ninth digit: WhatsApp answers without it.
    older = [looked_up("+5511988887777", "551188887777", on_whatsapp=True)]
    assert neonize_send.known_user("5511988887777", older) == "551188887777"


@pytest.mark.parametrize(
    "answers",
    [[looked_up("+5511900000000", "5511900000000", on_whatsapp=False)], []],
)
def test_a_number_without_whatsapp_is_refused(answers: list[Any]) -> None:
    with pytest.raises(SendRefused) as refused:
        neonize_send.known_user("5511900000000", answers)
    assert refused.value.code == "not_on_whatsapp"
    assert str(refused.value) == "+5511900000000 is not on WhatsApp"
