"""Stickers, view-once media and link previews over real gRPC with the simulator: each goes
through the scheduler and reaches the phone with its details; bad ones are refused with
details and queue nothing; a view-once image someone sends arrives flagged."""

from __future__ import annotations

import hashlib
import io

import grpc
from PIL import Image

from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.test_conversation import PHONE, phone_entry, sent
from tests.test_events import messenger
from tests.test_inbound import SENDER, received
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["messenger"]


def image_bytes(kind: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA" if kind == "WEBP" else "RGB", size, (200, 30, 30)).save(out, kind)
    return out.getvalue()


WEBP = image_bytes("WEBP", (512, 512))
JPEG = image_bytes("JPEG")
OGG = b"OggS not really"


async def send(messenger: Messenger, instance_id: str, **fields: object) -> pb.Message:
    request = pb.SendMessageRequest(instance_id=instance_id, phone=SENDER, **fields)  # type: ignore[arg-type]
    return (await messenger.stub.SendMessage(request, metadata=messenger.metadata)).message


async def test_a_sticker_a_view_once_image_and_a_link_preview_reach_the_phone(
    messenger: Messenger,
) -> None:
    await messenger.ready("rich", PHONE)
    sticker = await send(messenger, "rich", sticker=pb.Media(data=WEBP, mime_type="image/webp"))
    once = await send(
        messenger, "rich", image=pb.Media(data=JPEG, mime_type="image/jpeg"), view_once=True
    )
    text = "our menu: https://example.com/menu?day=1 see you"
    preview = pb.LinkPreview(
        url="https://example.com/menu?day=1", title="Menu", description="Today", thumbnail=JPEG
    )
    linked = await send(messenger, "rich", text=pb.Text(body=text), link_preview=preview)
    assert (sticker.kind, once.kind, linked.kind) == ("sticker", "image", "text")
    assert once.view_once
    assert not sticker.view_once

    entry = await phone_entry(
        messenger, "rich", (await sent(messenger, "rich", sticker)).whatsapp_message_id
    )
    assert entry.kind == "sticker"
    assert entry.media_sha256 == hashlib.sha256(WEBP).hexdigest()
    entry = await phone_entry(
        messenger, "rich", (await sent(messenger, "rich", once)).whatsapp_message_id
    )
    assert (entry.kind, entry.view_once) == ("image", True)
    entry = await phone_entry(
        messenger, "rich", (await sent(messenger, "rich", linked)).whatsapp_message_id
    )
    assert (entry.text, entry.view_once) == (text, False)
    assert (entry.link_url, entry.link_title, entry.link_description) == (
        "https://example.com/menu?day=1",
        "Menu",
        "Today",
    )
    assert entry.link_thumbnail_size == len(JPEG)


async def test_a_text_without_a_preview_has_none(messenger: Messenger) -> None:
    await messenger.ready("plain-link", PHONE)
    message = await send(messenger, "plain-link", text=pb.Text(body="see https://example.com"))
    entry = await phone_entry(
        messenger, "plain-link", (await sent(messenger, "plain-link", message)).whatsapp_message_id
    )
    assert (entry.link_url, entry.link_thumbnail_size) == ("", 0)  # nothing fetched, none made


async def test_bad_stickers_view_once_and_previews_are_refused_with_details(
    messenger: Messenger,
) -> None:
    await messenger.ready("rich-bad", PHONE)
    url = "https://example.com/x"
    cases: list[tuple[dict[str, object], list[str]]] = [
        ({"sticker": pb.Media(data=JPEG, mime_type="image/webp")}, ["sticker.data"]),
        ({"sticker": pb.Media(data=WEBP, mime_type="image/png")}, ["sticker.mime_type"]),
        (
            {"sticker": pb.Media(data=WEBP, mime_type="image/webp", caption="hi")},
            ["sticker.caption"],
        ),
        ({"text": pb.Text(body="hi"), "view_once": True}, ["view_once"]),
        (
            {"document": pb.Media(data=b"%PDF", mime_type="application/pdf"), "view_once": True},
            ["view_once"],
        ),
        (
            {"audio": pb.Audio(data=OGG, mime_type="audio/ogg"), "view_once": True},
            ["view_once"],  # a plain audio file; only a voice note can be
        ),
        (
            {"text": pb.Text(body="no url"), "link_preview": pb.LinkPreview(url=url)},
            ["link_preview.url"],
        ),
        (
            {"text": pb.Text(body=f"x {url}"), "link_preview": pb.LinkPreview(url="ftp://a/b")},
            ["link_preview.url"],
        ),
        (
            {
                "text": pb.Text(body=f"x {url}"),
                "link_preview": pb.LinkPreview(url=url, thumbnail=b"GIF89a"),
            },
            ["link_preview.thumbnail"],
        ),
        (
            {
                "image": pb.Media(data=JPEG, mime_type="image/jpeg", caption=url),
                "link_preview": pb.LinkPreview(url=url),
            },
            ["link_preview", "link_preview.url"],
        ),
    ]
    for fields, expected in cases:
        _, violations = await expect_error(
            send(messenger, "rich-bad", **fields), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert [field for field, _ in violations] == expected, fields
    listed = await messenger.stub.ListMessages(
        pb.ListMessagesRequest(instance_id="rich-bad"), metadata=messenger.metadata
    )
    assert list(listed.messages) == []


async def test_a_view_once_image_someone_sends_arrives_flagged(messenger: Messenger) -> None:
    await messenger.ready("once-in", PHONE)
    media = spb.InjectedMedia(
        kind=epb.MEDIA_KIND_IMAGE, data=JPEG, mime_type="image/jpeg", view_once=True
    )
    event = await received(messenger, "once-in", media=media)
    assert event.message_received.media.view_once
    plain = spb.InjectedMedia(kind=epb.MEDIA_KIND_IMAGE, data=JPEG, mime_type="image/jpeg")
    assert not (await received(messenger, "once-in", media=plain)).message_received.media.view_once
