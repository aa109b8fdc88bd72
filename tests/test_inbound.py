"""Inbound messages from the simulator's phones: every kind arrives as a durable event with
the right payload, media downloads byte-exact, and receipts from the phone side move the
states of sent messages."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import FAST_SIM, RunningGateway, started_gateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_events import messenger, subscribe, subscribed, take
from zapgate.v1 import event_pb2 as pb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["messenger"]  # the fixture, shared with test_events

SENDER = "+5511970000001"
SENDER_JID = "5511970000001@s.whatsapp.net"


async def inject(messenger: Messenger, instance_id: str, **fields: object) -> str:
    fields.setdefault("from_phone", SENDER)
    request = spb.InjectIncomingMessageRequest(instance_id=instance_id, **fields)  # type: ignore[arg-type]
    reply = await messenger.client.sim.InjectIncomingMessage(request, metadata=messenger.metadata)
    return reply.message_id


async def received(messenger: Messenger, instance_id: str, **fields: object) -> pb.Event:
    """Injects one message and returns the MessageReceived event it became."""
    stream = await subscribed(
        messenger,
        only_new=True,
        instance_ids=[instance_id],
        types=[pb.EVENT_TYPE_MESSAGE_RECEIVED],
    )
    message_id = await inject(messenger, instance_id, **fields)
    [event] = await take(stream, 1)
    assert event.message_received.message_id == message_id
    assert event.instance_id == instance_id
    return event


async def download(
    messenger: Messenger, instance_id: str, message_id: str
) -> list[mpb.DownloadMediaResponse]:
    request = mpb.DownloadMediaRequest(instance_id=instance_id, message_id=message_id)
    return [
        chunk async for chunk in messenger.stub.DownloadMedia(request, metadata=messenger.metadata)
    ]


@pytest.fixture
async def inbox(messenger: Messenger) -> str:
    await messenger.ready("inbox", "+5511970000900")
    return "inbox"


async def test_text_from_a_direct_chat_with_phone_number_and_lid(
    messenger: Messenger, inbox: str
) -> None:
    event = await received(
        messenger, inbox, text="olá, tudo bem?", from_lid="208734900112233", push_name="Ana"
    )
    message = event.message_received
    assert message.WhichOneof("content") == "text"
    assert message.text == "olá, tudo bem?"
    assert message.chat_jid == SENDER_JID
    assert message.sender_jid == SENDER_JID
    assert message.sender_lid == "208734900112233@lid"
    assert message.push_name == "Ana"
    assert not message.group_jid
    assert not message.from_me
    assert message.sent_time.seconds > 0
    assert not message.HasField("reply_to")


async def test_group_message_carries_the_group(messenger: Messenger, inbox: str) -> None:
    group = "120363025246125486@g.us"
    event = await received(messenger, inbox, text="bom dia, grupo", group_jid=group)
    message = event.message_received
    assert message.group_jid == group
    assert message.chat_jid == group
    assert message.sender_jid == SENDER_JID


async def test_reply_context(messenger: Messenger, inbox: str) -> None:
    reply_to = pb.ReplyContext(message_id="3EB0AAAA1111", sender_jid="5511970000900@s.whatsapp.net")
    event = await received(messenger, inbox, text="respondendo", reply_to=reply_to)
    assert event.message_received.reply_to == reply_to


async def test_reaction_and_its_removal(messenger: Messenger, inbox: str) -> None:
    first = await received(
        messenger, inbox, reaction=pb.Reaction(message_id="3EB0BBBB2222", emoji="👍")
    )
    assert first.message_received.reaction == pb.Reaction(message_id="3EB0BBBB2222", emoji="👍")
    removed = await received(messenger, inbox, reaction=pb.Reaction(message_id="3EB0BBBB2222"))
    assert removed.message_received.reaction.message_id == "3EB0BBBB2222"
    assert removed.message_received.reaction.emoji == ""
    assert removed.message_received.HasField("reaction")


async def test_an_edit_names_the_edited_message_and_its_new_text(
    messenger: Messenger, inbox: str
) -> None:
    original = await received(messenger, inbox, text="see you at 5", from_lid="208734900112233")
    edited = pb.MessageEdited(message_id=original.message_received.message_id, text="see you at 6")
    event = await received(messenger, inbox, edited=edited, from_lid="208734900112233")
    message = event.message_received
    assert message.WhichOneof("content") == "edited"
    assert message.edited == edited
    assert message.message_id != edited.message_id  # an edit has an id of its own
    assert message.sender_jid == SENDER_JID
    assert message.sender_lid == "208734900112233@lid"


async def test_a_deletion_for_everyone_names_the_deleted_message(
    messenger: Messenger, inbox: str
) -> None:
    group = "120363025246125486@g.us"
    event = await received(
        messenger, inbox, revoked=pb.MessageRevoked(message_id="3EB0CCCC3333"), group_jid=group
    )
    message = event.message_received
    assert message.WhichOneof("content") == "revoked"
    assert message.revoked.message_id == "3EB0CCCC3333"
    assert message.group_jid == group
    assert message.sender_jid == SENDER_JID


async def test_location(messenger: Messenger, inbox: str) -> None:
    where = mpb.Location(latitude=-23.5505, longitude=-46.6333, name="Sé", address="Praça da Sé")
    event = await received(messenger, inbox, location=where)
    assert event.message_received.location == where


async def test_contact_card(messenger: Messenger, inbox: str) -> None:
    card = mpb.ContactCard(display_name="João Silva", phone="+5511970000777")
    event = await received(messenger, inbox, contact=card)
    contact = event.message_received.contact
    assert contact.display_name == "João Silva"
    assert "FN:João Silva" in contact.vcard
    assert "waid=5511970000777" in contact.vcard


MEDIA = [
    (pb.MEDIA_KIND_IMAGE, "image/jpeg", "", "a photo", 0),
    (pb.MEDIA_KIND_VIDEO, "video/mp4", "", "a clip", 12),
    (pb.MEDIA_KIND_AUDIO, "audio/mpeg", "song.mp3", "", 200),
    (pb.MEDIA_KIND_VOICE_NOTE, "audio/ogg; codecs=opus", "", "", 7),
    (pb.MEDIA_KIND_DOCUMENT, "application/pdf", "contrato.pdf", "assine", 0),
    (pb.MEDIA_KIND_STICKER, "image/webp", "", "", 0),
]


@pytest.mark.parametrize(("kind", "mime_type", "file_name", "caption", "seconds"), MEDIA)
async def test_media_metadata_in_the_event_and_bytes_by_download(
    messenger: Messenger,
    inbox: str,
    kind: int,
    mime_type: str,
    file_name: str,
    caption: str,
    seconds: int,
) -> None:
    data = os.urandom(600_000)  # more than two download chunks
    media = pb.ReceivedMedia(kind=kind)  # the event's view of what is injected below
    event = await received(
        messenger,
        inbox,
        media=spb.InjectedMedia(
            kind=kind,
            data=data,
            mime_type=mime_type,
            file_name=file_name,
            caption=caption,
            seconds=seconds,
        ),
    )
    got = event.message_received.media
    assert got.kind == media.kind
    assert (got.mime_type, got.file_name, got.caption, got.seconds) == (
        mime_type,
        file_name,
        caption,
        seconds,
    )
    assert got.size == len(data)
    assert got.sha256 == hashlib.sha256(data).hexdigest()

    chunks = await download(messenger, inbox, event.message_received.message_id)
    assert len(chunks) == 3
    assert b"".join(c.data for c in chunks) == data
    assert (chunks[0].mime_type, chunks[0].file_name, chunks[0].size) == (
        mime_type,
        file_name,
        len(data),
    )


async def test_download_without_media_is_not_found(messenger: Messenger, inbox: str) -> None:
    event = await received(messenger, inbox, text="no media here")
    for message_id in (event.message_received.message_id, "3A0000UNKNOWN"):
        info, _ = await expect_error(
            download(messenger, inbox, message_id), grpc.StatusCode.NOT_FOUND
        )
        assert info.reason == "MEDIA_NOT_FOUND"


async def test_bad_injections_are_field_violations(messenger: Messenger, inbox: str) -> None:
    cases = [
        ({"from_phone": "", "text": "x"}, "from_phone"),
        ({"from_phone": "12345", "text": "x"}, "from_phone"),
        ({}, "content"),
        ({"text": "x", "group_jid": "1234@s.whatsapp.net"}, "group_jid"),
        (
            {"media": spb.InjectedMedia(kind=pb.MEDIA_KIND_IMAGE, mime_type="image/png")},
            "media.data",
        ),
        ({"reaction": pb.Reaction(emoji="x")}, "reaction.message_id"),
        ({"edited": pb.MessageEdited(text="new")}, "edited.message_id"),
        ({"edited": pb.MessageEdited(message_id="3EB0")}, "edited.text"),
        ({"revoked": pb.MessageRevoked()}, "revoked.message_id"),
    ]
    for fields, field in cases:
        _, bad = await expect_error(
            inject(messenger, inbox, **fields), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert field in [name for name, _ in bad], fields


async def test_another_tenant_sees_neither_the_event_nor_the_media(
    running: RunningGateway, messenger: Messenger, inbox: str
) -> None:
    event = await received(
        messenger,
        inbox,
        media=spb.InjectedMedia(
            kind=pb.MEDIA_KIND_IMAGE, data=b"secret photo", mime_type="image/png"
        ),
    )
    other = Messenger(await SimClient.for_tenant(running, "intruder-inbound"))
    await other.ready(inbox, "+5511970000901")  # the same instance id, in another tenant
    info, _ = await expect_error(
        download(other, inbox, event.message_received.message_id), grpc.StatusCode.NOT_FOUND
    )
    assert info.reason == "MEDIA_NOT_FOUND"
    own = await inject(other, inbox, text="mine")
    # From the start of the log, the first inbound message this tenant sees is its own.
    [first] = await take(subscribe(other, types=[pb.EVENT_TYPE_MESSAGE_RECEIVED]), 1)
    assert first.message_received.message_id == own


async def test_phone_side_receipts_move_sent_messages(tmp_path: Path) -> None:
    no_auto_receipts = dataclasses.replace(FAST_SIM, delivered_seconds=-1, read_seconds=-1)
    async with started_gateway(tmp_path, sim_timings=no_auto_receipts) as gateway:
        client = await SimClient.for_tenant(gateway, "acme")
        messenger = Messenger(client)
        await messenger.ready("rcpt", "+5511970000800")
        stream = await subscribed(
            messenger, only_new=True, types=[pb.EVENT_TYPE_MESSAGE_STATE_CHANGED]
        )
        voice = await messenger.stub.SendMessage(
            mpb.SendMessageRequest(
                instance_id="rcpt",
                phone=SENDER,
                audio=mpb.Audio(data=b"OggS-voice", mime_type="audio/ogg", voice_note=True),
            ),
            metadata=messenger.metadata,
        )
        sent = await take(stream, 3)
        assert sent[-1].message_state_changed.state == mpb.MESSAGE_STATE_SENT
        whatsapp_id = sent[-1].message_state_changed.whatsapp_message_id

        stream = await subscribed(
            messenger, only_new=True, types=[pb.EVENT_TYPE_MESSAGE_STATE_CHANGED]
        )
        for kind in (spb.RECEIPT_KIND_DELIVERED, spb.RECEIPT_KIND_PLAYED):
            await client.sim.SendReceipt(
                spb.SendReceiptRequest(
                    instance_id="rcpt",
                    whatsapp_message_ids=[whatsapp_id],
                    kind=kind,
                    from_phone=SENDER,
                ),
                metadata=client.metadata,
            )
        states = [e.message_state_changed for e in await take(stream, 2)]
        assert [s.state for s in states] == [mpb.MESSAGE_STATE_DELIVERED, mpb.MESSAGE_STATE_READ]
        assert all(s.message_id == voice.message.id for s in states)


async def test_an_injected_message_is_acknowledged_only_once_its_event_is_logged(
    tmp_path: Path,
) -> None:
    """InjectIncomingMessage answers after the event is committed, so a kill -9 of the core
    right after the answer cannot lose it (the chaos test found acknowledged ones missing)."""
    async with started_gateway(tmp_path) as running:
        events = running.gateway.runtime.events
        append = events.append

        async def slow_append(*args: Any) -> None:
            await asyncio.sleep(0.3)  # a busy store: the commit comes well after the engine
            await append(*args)

        events.append = slow_append  # type: ignore[method-assign]
        client = await SimClient.for_tenant(running, "acme")
        messenger = Messenger(client)
        await messenger.ready("slow", "+5511970000950")
        message_id = await inject(messenger, "slow", text="are you there?")
        logged = await events.read("acme", 0, ["slow"], [pb.EVENT_TYPE_MESSAGE_RECEIVED], 10)
        assert [e.message_received.message_id for e in logged] == [message_id]
