"""Polls over real gRPC with the simulator: a poll goes through the scheduler and reaches the
phone with its question, options and selectable count; a simulated phone's vote arrives as a
PollVote event naming the options chosen (matched by their hashes, as WhatsApp sends them);
polls posted by others arrive as events; bad polls are refused with details; another
tenant's vote never learns a poll's options."""

from __future__ import annotations

import grpc

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_conversation import PHONE, phone_entry, sent
from tests.test_events import messenger
from tests.test_inbound import SENDER, SENDER_JID, received
from zapgate.sessions.events import poll_option_sha256
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["messenger"]

OPTIONS = ["pizza", "sushi", "tacos"]


async def send_poll(
    messenger: Messenger, instance_id: str, poll: pb.Poll, **fields: object
) -> pb.Message:
    request = pb.SendMessageRequest(instance_id=instance_id, phone=SENDER, poll=poll, **fields)  # type: ignore[arg-type]
    return (await messenger.stub.SendMessage(request, metadata=messenger.metadata)).message


def vote(poll_message_id: str, *options: str) -> spb.InjectedPollVote:
    return spb.InjectedPollVote(poll_message_id=poll_message_id, options=list(options))


async def test_a_poll_reaches_the_phone_and_votes_come_back_by_name(messenger: Messenger) -> None:
    await messenger.ready("poll", PHONE)
    poll = pb.Poll(question="Lunch?", options=OPTIONS, selectable_count=2)
    queued = await send_poll(messenger, "poll", poll)
    assert queued.kind == "poll"
    assert queued.recipient_jid == SENDER_JID
    done = await sent(messenger, "poll", queued)
    entry = await phone_entry(messenger, "poll", done.whatsapp_message_id)
    assert (entry.kind, entry.text) == ("poll", "Lunch?")
    assert list(entry.poll_options) == OPTIONS
    assert entry.poll_selectable_count == 2

    event = await received(
        messenger, "poll", poll_vote=vote(done.whatsapp_message_id, "tacos", "pizza")
    )
    cast = event.message_received
    assert cast.WhichOneof("content") == "poll_vote"
    assert cast.sender_jid == SENDER_JID
    assert cast.poll_vote.poll_message_id == done.whatsapp_message_id
    assert cast.poll_vote.poll_id == done.id
    assert cast.poll_vote.options_known
    assert list(cast.poll_vote.options) == ["tacos", "pizza"]
    assert list(cast.poll_vote.option_sha256) == [
        poll_option_sha256("tacos"),
        poll_option_sha256("pizza"),
    ]

    withdrawn = await received(messenger, "poll", poll_vote=vote(done.whatsapp_message_id))
    assert withdrawn.message_received.poll_vote.options_known
    assert list(withdrawn.message_received.poll_vote.options) == []


async def test_a_poll_can_reply_and_a_received_poll_is_an_event(messenger: Messenger) -> None:
    await messenger.ready("poll-in", PHONE)
    posted = pb.Poll(question="Which day?", options=["mon", "tue"], selectable_count=0)
    event = await received(messenger, "poll-in", poll=posted)
    incoming = event.message_received
    assert incoming.WhichOneof("content") == "poll"
    assert incoming.poll == posted
    # A vote in a poll someone else posted is named from the poll as received.
    other = await received(messenger, "poll-in", poll_vote=vote(incoming.message_id, "tue"))
    assert other.message_received.poll_vote.options_known
    assert other.message_received.poll_vote.poll_id == ""  # not one of the instance's
    assert list(other.message_received.poll_vote.options) == ["tue"]
    assert list(other.message_received.poll_vote.option_sha256) == [poll_option_sha256("tue")]
    # A vote in a poll zapgate never saw (posted before the instance existed): hashes only.
    unknown = await received(messenger, "poll-in", poll_vote=vote("3EB0NEVERSEEN", "tue"))
    assert not unknown.message_received.poll_vote.options_known
    assert list(unknown.message_received.poll_vote.options) == []
    assert list(unknown.message_received.poll_vote.option_sha256) == [poll_option_sha256("tue")]

    answer = pb.Poll(question="Time?", options=["9:00", "14:00"], selectable_count=1)
    reply = await send_poll(messenger, "poll-in", answer, reply_to=incoming.message_id)
    done = await sent(messenger, "poll-in", reply)
    entry = await phone_entry(messenger, "poll-in", done.whatsapp_message_id)
    assert entry.quoted_message_id == incoming.message_id
    assert entry.poll_selectable_count == 1


async def test_another_tenants_vote_never_names_the_options(
    running: RunningGateway, messenger: Messenger
) -> None:
    await messenger.ready("poll-t", PHONE)
    done = await sent(
        messenger,
        "poll-t",
        await send_poll(messenger, "poll-t", pb.Poll(question="Q", options=OPTIONS)),
    )
    other = Messenger(await SimClient.for_tenant(running, "t-intruder-poll"))
    await other.ready("poll-t", "+5511970000902")  # the same instance id, in another tenant
    event = await received(other, "poll-t", poll_vote=vote(done.whatsapp_message_id, "sushi"))
    stolen = event.message_received.poll_vote
    assert not stolen.options_known
    assert stolen.poll_id == ""
    assert list(stolen.options) == []


async def test_bad_polls_are_refused_with_details(messenger: Messenger) -> None:
    await messenger.ready("poll-bad", PHONE)
    cases = [
        (pb.Poll(question="Q", options=["only"]), ["poll.options"]),
        (pb.Poll(question="Q", options=[f"o{n}" for n in range(13)]), ["poll.options"]),
        (pb.Poll(question=" ", options=["a", "b"]), ["poll.question"]),
        (pb.Poll(question="Q", options=["a", "a"]), ["poll.options[1]"]),
        (pb.Poll(question="Q", options=["a", ""]), ["poll.options[1]"]),
        (pb.Poll(question="Q", options=["a", "b"], selectable_count=3), ["poll.selectable_count"]),
        (pb.Poll(question="Q", options=["a", "x" * 101]), ["poll.options[1]"]),
    ]
    for poll, fields in cases:
        _, violations = await expect_error(
            send_poll(messenger, "poll-bad", poll), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert [field for field, _ in violations] == fields, poll
    request = pb.ListMessagesRequest(instance_id="poll-bad")
    listed = await messenger.stub.ListMessages(request, metadata=messenger.metadata)
    assert list(listed.messages) == []  # a refused poll queues nothing
    bad_vote = spb.InjectIncomingMessageRequest(
        instance_id="poll-bad", from_phone=SENDER, poll_vote=spb.InjectedPollVote()
    )
    _, violations = await expect_error(
        messenger.client.sim.InjectIncomingMessage(bad_vote, metadata=messenger.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations == [("poll_vote.poll_message_id", "required")]
