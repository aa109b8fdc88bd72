"""Stickers, view-once media and link previews built as neonize's real waE2E protobufs (as Go
receives them), and a view-once image WhatsApp delivers mapped to zapgate's event."""

from __future__ import annotations

import warnings

import pytest

from tests.test_neonize_inbound import KEY, MEDIA_FILE, event
from tests.test_neonize_send import UPLOADED, built, refusal
from tests.test_rich_messages import JPEG, OGG, WEBP, image_bytes
from zapgate.sessions import neonize_inbound, neonize_send
from zapgate.sessions.engine import Media, OutgoingContent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa
    from neonize.utils.enum import MediaType

URL = "https://example.com/menu"


def test_a_sticker_is_a_webp_sticker_message_uploaded_as_an_image() -> None:
    content = OutgoingContent(sticker=Media(WEBP, "image/webp"))
    upload = neonize_send.upload_of(content)
    assert upload is not None
    assert upload[1] == MediaType.MediaImage
    sticker = built(content).stickerMessage
    assert sticker.mimetype == "image/webp"
    assert (sticker.width, sticker.height, sticker.isAnimated) == (512, 512, False)
    assert sticker.directPath == UPLOADED.DirectPath
    assert sticker.mediaKey == UPLOADED.MediaKey


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (OutgoingContent(image=Media(JPEG, "image/jpeg", caption="once")), "imageMessage"),
        (OutgoingContent(video=Media(b"\x00mp4", "video/mp4")), "videoMessage"),
    ],
)
def test_view_once_media_is_flagged_and_wrapped(content: OutgoingContent, field: str) -> None:
    import dataclasses

    message = built(dataclasses.replace(content, view_once=True))
    assert message.HasField("viewOnceMessage")
    inner = getattr(message.viewOnceMessage.message, field)
    assert inner.viewOnce
    assert not built(content).HasField("viewOnceMessage")


def test_a_plain_audio_file_cannot_be_view_once_a_voice_note_can() -> None:
    audio = Media(OGG, "audio/ogg")
    refused = refusal(neonize_send.check_content, OutgoingContent(audio=audio, view_once=True))
    assert refused.code == "invalid_content"
    text = OutgoingContent(text="hi", view_once=True)
    assert refusal(neonize_send.check_content, text).code == "invalid_content"


def test_a_link_preview_is_an_extended_text_with_the_callers_data() -> None:
    content = OutgoingContent(
        text=f"menu: {URL}",
        link_url=URL,
        link_title="Menu",
        link_description="Today's dishes",
        link_thumbnail=image_bytes("PNG", (800, 400)),
    )
    text = built(content).extendedTextMessage
    assert (text.text, text.matchedText, text.title, text.description) == (
        f"menu: {URL}",
        URL,
        "Menu",
        "Today's dishes",
    )
    assert text.JPEGThumbnail.startswith(b"\xff\xd8\xff")  # shrunk to an inline JPEG
    assert (text.thumbnailWidth, text.thumbnailHeight) == (800, 400)


def test_a_link_preview_keeps_a_reply_context() -> None:
    from tests.test_neonize_conversation import RECEIVED

    content = OutgoingContent(text=f"see {URL}", link_url=URL, link_title="T", quote=RECEIVED)
    text = built(content).extendedTextMessage
    assert text.matchedText == URL
    assert text.contextInfo.stanzaID == RECEIVED.message_id


def test_a_link_preview_whose_url_is_not_in_the_text_is_refused() -> None:
    content = OutgoingContent(text="no link", link_url=URL)
    assert refusal(neonize_send.check_content, content).code == "invalid_content"


def test_a_received_view_once_image_is_flagged() -> None:
    image = wa.ImageMessage(mimetype="image/jpeg", viewOnce=True, **MEDIA_FILE)
    wrapped = wa.Message(
        viewOnceMessageV2=wa.FutureProofMessage(message=wa.Message(imageMessage=image))
    )
    received = neonize_inbound.to_message_received(KEY, event(wrapped))
    assert received is not None
    assert (received.kind, received.view_once) == ("image", True)
    plain = wa.Message(imageMessage=wa.ImageMessage(mimetype="image/jpeg", **MEDIA_FILE))
    received = neonize_inbound.to_message_received(KEY, event(plain))
    assert received is not None
    assert not received.view_once
