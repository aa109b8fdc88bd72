"""Conversations over real gRPC with the simulator: replies that quote, mentions, reactions,
edits, deletions for everyone, read receipts and chat presences reach the phone with their
details; every message named is scoped to the calling tenant and instance."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import sqlalchemy as sa

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_events import messenger
from tests.test_inbound import SENDER, SENDER_JID, received
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.schema import messages
from zapgate.ratelimit.pacing import Pacer
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb
from zapgate_client import Client

__all__ = ["messenger"]

S = pb.MessageState
SENT = {S.MESSAGE_STATE_SENT, S.MESSAGE_STATE_DELIVERED, S.MESSAGE_STATE_READ}
PHONE = "+5511970000900"
OTHER = "+5511960000777"


async def sent(messenger: Messenger, instance_id: str, message: pb.Message) -> pb.Message:
    return await messenger.wait_message(instance_id, message.id, lambda m: m.state in SENT)


async def phone_entry(
    messenger: Messenger, instance_id: str, whatsapp_id: str
) -> spb.ReceivedMessage:
    [entry] = [
        r for r in await messenger.received(instance_id) if r.whatsapp_message_id == whatsapp_id
    ]
    return entry


async def react(messenger: Messenger, instance_id: str, message_id: str, emoji: str) -> pb.Message:
    request = pb.ReactRequest(instance_id=instance_id, message_id=message_id, emoji=emoji)
    return (await messenger.stub.React(request, metadata=messenger.metadata)).message


async def edit(messenger: Messenger, instance_id: str, message_id: str, text: str) -> pb.Message:
    request = pb.EditMessageRequest(instance_id=instance_id, message_id=message_id, text=text)
    return (await messenger.stub.EditMessage(request, metadata=messenger.metadata)).message


async def revoke(messenger: Messenger, instance_id: str, message_id: str) -> pb.Message:
    request = pb.RevokeMessageRequest(instance_id=instance_id, message_id=message_id)
    return (await messenger.stub.RevokeMessage(request, metadata=messenger.metadata)).message


async def test_a_reply_quotes_a_received_message_and_mentions_its_sender(
    messenger: Messenger,
) -> None:
    await messenger.ready("reply", PHONE)
    incoming = (await received(messenger, "reply", text="are you open today?")).message_received
    reply = await messenger.send_text(
        "reply",
        SENDER,
        f"@{SENDER[1:]} yes, until 6",
        reply_to=incoming.message_id,
        mentions=[SENDER],
    )
    assert reply.reply_to == incoming.message_id
    assert list(reply.mentions) == [SENDER]
    done = await sent(messenger, "reply", reply)
    entry = await phone_entry(messenger, "reply", done.whatsapp_message_id)
    assert entry.kind == "text"
    assert entry.text == f"@{SENDER[1:]} yes, until 6"
    assert entry.quoted_message_id == incoming.message_id
    assert list(entry.mentioned_jids) == [SENDER_JID]


async def test_a_reply_to_an_own_message_quotes_its_whatsapp_id(messenger: Messenger) -> None:
    await messenger.ready("self-reply", PHONE)
    first = await sent(messenger, "self-reply", await messenger.send_text("self-reply", OTHER, "a"))
    caption = pb.Media(data=b"\x89PNG fake", mime_type="image/png", caption="see @5511960000777")
    request = pb.SendMessageRequest(
        instance_id="self-reply", phone=OTHER, image=caption, reply_to=first.id, mentions=[OTHER]
    )
    image = (await messenger.stub.SendMessage(request, metadata=messenger.metadata)).message
    done = await sent(messenger, "self-reply", image)
    entry = await phone_entry(messenger, "self-reply", done.whatsapp_message_id)
    assert entry.kind == "image"
    assert entry.quoted_message_id == first.whatsapp_message_id
    assert list(entry.mentioned_jids) == ["5511960000777@s.whatsapp.net"]


async def test_reactions_edits_and_revokes_reach_the_phone_in_order(messenger: Messenger) -> None:
    await messenger.ready("acts", PHONE)
    incoming = (await received(messenger, "acts", text="hello")).message_received
    mine = await sent(messenger, "acts", await messenger.send_text("acts", SENDER, "helo"))
    queued = [
        await react(messenger, "acts", incoming.message_id, "❤️"),
        await react(messenger, "acts", mine.id, "👍"),
        await edit(messenger, "acts", mine.id, "hello {not a template}"),
        await react(messenger, "acts", incoming.message_id, ""),
        await revoke(messenger, "acts", mine.id),
    ]
    assert [m.kind for m in queued] == ["reaction", "reaction", "edit", "reaction", "revoke"]
    assert {m.recipient_jid for m in queued} == {SENDER_JID}
    assert queued[0].target_message_id == incoming.message_id
    assert queued[1].target_message_id == mine.id
    done = [await sent(messenger, "acts", m) for m in queued]
    phone = {r.whatsapp_message_id: r for r in await messenger.received("acts")}
    entries = [phone[m.whatsapp_message_id] for m in done]
    assert [(e.kind, e.text, e.target_message_id) for e in entries] == [
        ("reaction", "❤️", incoming.message_id),
        ("reaction", "👍", mine.whatsapp_message_id),
        ("edit", "hello {not a template}", mine.whatsapp_message_id),
        ("reaction", "", incoming.message_id),
        ("revoke", "", mine.whatsapp_message_id),
    ]
    # One chat's order is kept: the phone got them as they were queued.
    order = [r.whatsapp_message_id for r in await messenger.received("acts")]
    assert [order.index(m.whatsapp_message_id) for m in done] == sorted(
        order.index(m.whatsapp_message_id) for m in done
    )


async def test_another_tenant_can_never_quote_react_edit_or_revoke(
    running: RunningGateway, messenger: Messenger
) -> None:
    await messenger.ready("conv", PHONE)
    incoming = (await received(messenger, "conv", text="private")).message_received
    mine = await sent(messenger, "conv", await messenger.send_text("conv", SENDER, "mine"))
    other = Messenger(await SimClient.for_tenant(running, "t-intruder-conv"))
    await other.ready("conv", "+5511970000901")  # the same instance id, in another tenant
    for message_id in (incoming.message_id, mine.id, mine.whatsapp_message_id):
        calls = [
            other.send_text("conv", SENDER, "hi", reply_to=message_id),
            react(other, "conv", message_id, "👍"),
            edit(other, "conv", message_id, "mine now"),
            revoke(other, "conv", message_id),
        ]
        for call in calls:
            info, _ = await expect_error(call, grpc.StatusCode.NOT_FOUND)
            assert info.reason == "MESSAGE_NOT_FOUND"
            assert info.metadata["message_id"] == message_id
    request = pb.MarkReadRequest(instance_id="conv", message_ids=[incoming.message_id])
    await expect_error(
        other.stub.MarkRead(request, metadata=other.metadata), grpc.StatusCode.NOT_FOUND
    )
    assert [r for r in await other.received("conv") if r.kind != "composing"] == []


async def test_bad_targets_and_inputs_are_refused_with_details(
    running: RunningGateway, messenger: Messenger
) -> None:
    await messenger.ready("bad", PHONE)
    incoming = (await received(messenger, "bad", text="hi")).message_received
    info, _ = await expect_error(
        messenger.send_text("bad", SENDER, "re", reply_to="3EB0UNKNOWN"), grpc.StatusCode.NOT_FOUND
    )
    assert info.metadata["message_id"] == "3EB0UNKNOWN"
    _, violations = await expect_error(
        react(messenger, "bad", "", "👍"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violations == [("message_id", "required")]
    _, violations = await expect_error(
        react(messenger, "bad", incoming.message_id, "ok"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [field for field, _ in violations] == ["emoji"]
    info, _ = await expect_error(
        edit(messenger, "bad", incoming.message_id, "x"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (info.reason, info.metadata["why"]) == ("MESSAGE_NOT_ACTIONABLE", "not_own")
    info, _ = await expect_error(
        revoke(messenger, "bad", incoming.message_id), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert info.metadata["why"] == "not_own"
    _, violations = await expect_error(
        messenger.send_text("bad", OTHER, "re", reply_to=incoming.message_id),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [field for field, _ in violations] == ["reply_to"]
    _, violations = await expect_error(
        messenger.send_text("bad", SENDER, "hi you", mentions=[SENDER]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations == [("mentions[0]", f"the text must contain @{SENDER[1:]}")]

    later = pb.SendMessageRequest(instance_id="bad", phone=OTHER, text=pb.Text(body="later"))
    later.send_at.FromSeconds(4_000_000_000)
    waiting = (await messenger.stub.SendMessage(later, metadata=messenger.metadata)).message
    info, _ = await expect_error(
        react(messenger, "bad", waiting.id, "👍"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert info.metadata["why"] == "not_sent"

    image = pb.SendMessageRequest(
        instance_id="bad", phone=OTHER, image=pb.Media(data=b"x", mime_type="image/png")
    )
    photo = (await messenger.stub.SendMessage(image, metadata=messenger.metadata)).message
    photo = await sent(messenger, "bad", photo)
    info, _ = await expect_error(
        edit(messenger, "bad", photo.id, "x"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert info.metadata["why"] == "not_text"

    old = await sent(messenger, "bad", await messenger.send_text("bad", OTHER, "typo"))
    await backdate(running, old.id, minutes=16)
    info, _ = await expect_error(
        edit(messenger, "bad", old.id, "fixed"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert info.metadata["why"] == "edit_window_passed"
    await revoke(messenger, "bad", old.id)  # deleting is allowed for much longer
    await backdate(running, old.id, minutes=61 * 60)
    info, _ = await expect_error(
        revoke(messenger, "bad", old.id), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert info.metadata["why"] == "revoke_window_passed"


async def backdate(running: RunningGateway, message_id: str, *, minutes: int) -> None:
    """The message was sent `minutes` ago (as far as the store knows)."""
    engine = await open_database(running.database_url)
    try:
        async with engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(messages.c.sent_time_us).where(messages.c.id == message_id)
                )
            ).one()
            await conn.execute(
                sa.update(messages)
                .where(messages.c.id == message_id)
                .values(sent_time_us=row[0] - minutes * 60_000_000)
            )
    finally:
        await engine.dispose()


async def test_mark_read_and_chat_presence_reach_the_phone_paced(messenger: Messenger) -> None:
    await messenger.ready("read", PHONE)
    ids = [
        (await received(messenger, "read", text=f"#{n}")).message_received.message_id
        for n in range(3)
    ]
    mark = messenger.stub.MarkRead
    reply = await mark(
        pb.MarkReadRequest(instance_id="read", up_to_message_id=ids[1]), metadata=messenger.metadata
    )
    assert (reply.chat_jid, reply.marked) == (SENDER_JID, 2)
    reply = await mark(
        pb.MarkReadRequest(instance_id="read", up_to_message_id=ids[2]), metadata=messenger.metadata
    )
    assert reply.marked == 1  # the first two were marked already
    reply = await mark(
        pb.MarkReadRequest(instance_id="read", message_ids=[ids[0]]), metadata=messenger.metadata
    )
    assert reply.marked == 1
    reads = [r for r in await messenger.received("read") if r.kind == "read"]
    assert [sorted(r.target_message_id.split(",")) for r in reads] == [
        sorted(ids[:2]),
        [ids[2]],
        [ids[0]],
    ]
    assert {r.recipient_jid for r in reads} == {SENDER_JID}

    for presence in (
        pb.CHAT_PRESENCE_COMPOSING,
        pb.CHAT_PRESENCE_RECORDING,
        pb.CHAT_PRESENCE_PAUSED,
    ):
        request = pb.SendChatPresenceRequest(instance_id="read", phone=SENDER, presence=presence)
        await messenger.stub.SendChatPresence(request, metadata=messenger.metadata)
    shown = [r.kind for r in await messenger.received("read") if r.kind != "read"]
    assert shown == ["composing", "recording", "paused"]

    request = pb.SendChatPresenceRequest(
        instance_id="read", phone=SENDER, presence=pb.CHAT_PRESENCE_COMPOSING
    )
    outcomes = await asyncio.gather(
        *[messenger.stub.SendChatPresence(request, metadata=messenger.metadata) for _ in range(30)],
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refused, "30 presences at once were all let through"
    assert {o.code() for o in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    info, _ = await expect_error(
        messenger.stub.SendChatPresence(request, metadata=messenger.metadata),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert info.reason == "RATE_LIMITED"
    assert float(info.metadata["retry_after_seconds"]) > 0
    _, violations = await expect_error(
        messenger.stub.SendChatPresence(
            pb.SendChatPresenceRequest(instance_id="read", phone=SENDER),
            metadata=messenger.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [field for field, _ in violations] == ["presence"]


def test_the_pacer_allows_a_burst_then_its_rate() -> None:
    now = [100.0]
    pacer = Pacer(lambda: now[0], per_second=2.0, burst=3)
    assert [pacer.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.take("a") == pytest.approx(0.5)
    assert pacer.take("b") == 0.0  # keys are separate
    now[0] += 0.5
    assert pacer.take("a") == 0.0
    assert pacer.take("a") == pytest.approx(0.5)
    now[0] += 60
    assert [pacer.take("a") for _ in range(4)][-1] > 0  # refills only up to the burst


async def test_the_python_client_replies_and_reacts(
    running: RunningGateway, messenger: Messenger, tenant: str
) -> None:
    await messenger.ready("client", PHONE)
    incoming = (await received(messenger, "client", text="price?")).message_received
    async with Client(running.address, await running.new_key(tenant)) as client:
        reply = await client.reply("client", incoming.message_id, SENDER, "R$ 10")
        reaction = await client.react("client", incoming.message_id, "👍")
        assert await client.mark_read("client", up_to=incoming.message_id) == 1
        assert await client.mark_read("client", [incoming.message_id]) == 1
    assert (reply.reply_to, reaction.target_message_id) == ((incoming.message_id,) * 2)
    done = [await sent(messenger, "client", m) for m in (reply, reaction)]
    entries = [await phone_entry(messenger, "client", m.whatsapp_message_id) for m in done]
    assert [(e.kind, e.quoted_message_id, e.target_message_id) for e in entries] == [
        ("text", incoming.message_id, ""),
        ("reaction", "", incoming.message_id),
    ]
