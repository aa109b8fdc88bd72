"""Presence over real gRPC with the simulator: the account's own presence and subscriptions
to contacts reach WhatsApp (the simulated phone records them), paced with chat presences;
contacts' presences (only those subscribed to, and still after a reconnect), chat presences
(typing, recording) and calls arrive as typed events with both the phone JID and the LID;
bad requests are refused with details."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.test_conversation import PHONE
from tests.test_events import messenger, subscribed, take
from tests.test_inbound import SENDER, SENDER_JID
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["messenger"]

LID = "98765432109876"
GROUP = "120363025246125888@g.us"


async def events_of(
    messenger: Messenger, instance_id: str, kinds: list[int], inject: object, count: int = 1
) -> list[epb.Event]:
    """Runs `inject` (a coroutine) and returns the next `count` events of these types."""
    stream = await subscribed(messenger, only_new=True, instance_ids=[instance_id], types=kinds)
    await inject  # type: ignore[misc]
    return await take(stream, count)


def presence(instance_id: str, **fields: object) -> spb.InjectPresenceRequest:
    return spb.InjectPresenceRequest(instance_id=instance_id, from_phone=SENDER, **fields)  # type: ignore[arg-type]


async def test_set_presence_and_subscribe_reach_whatsapp(messenger: Messenger) -> None:
    await messenger.ready("online", PHONE)
    for value in (pb.PRESENCE_AVAILABLE, pb.PRESENCE_UNAVAILABLE):
        request = pb.SetPresenceRequest(instance_id="online", presence=value)
        await messenger.stub.SetPresence(request, metadata=messenger.metadata)
    subscribe = pb.SubscribePresenceRequest(instance_id="online", phone=SENDER)
    await messenger.stub.SubscribePresence(subscribe, metadata=messenger.metadata)
    shown = [(r.kind, r.recipient_jid) for r in await messenger.received("online")]
    assert shown == [("available", ""), ("unavailable", ""), ("subscribe", SENDER_JID)]


async def test_presence_calls_are_paced_and_checked(messenger: Messenger) -> None:
    await messenger.ready("online-bad", PHONE)
    bad = [
        (
            messenger.stub.SetPresence(
                pb.SetPresenceRequest(instance_id="online-bad"), metadata=messenger.metadata
            ),
            ["presence"],
        ),
        (
            messenger.stub.SubscribePresence(
                pb.SubscribePresenceRequest(instance_id="online-bad", jid=GROUP),
                metadata=messenger.metadata,
            ),
            ["jid"],
        ),
        (
            messenger.stub.SubscribePresence(
                pb.SubscribePresenceRequest(instance_id="online-bad"), metadata=messenger.metadata
            ),
            ["recipient"],
        ),
    ]
    for call, fields in bad:
        _, violations = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert [field for field, _ in violations] == fields
    request = pb.SetPresenceRequest(instance_id="online-bad", presence=pb.PRESENCE_AVAILABLE)
    outcomes = await asyncio.gather(
        *[messenger.stub.SetPresence(request, metadata=messenger.metadata) for _ in range(30)],
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refused, "30 presences at once were all let through"
    assert {o.code() for o in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    shown = [r for r in await messenger.received("online-bad") if r.kind == "available"]
    assert len(shown) == 30 - len(refused)  # a refused call sends nothing


async def subscribe(messenger: Messenger, instance_id: str) -> None:
    request = pb.SubscribePresenceRequest(instance_id=instance_id, phone=SENDER)
    await messenger.stub.SubscribePresence(request, metadata=messenger.metadata)


async def test_a_contacts_presence_arrives_with_both_identities(messenger: Messenger) -> None:
    await messenger.ready("seen", PHONE)
    await subscribe(messenger, "seen")
    kinds = [epb.EVENT_TYPE_PRESENCE_CHANGED]
    inject = messenger.client.sim.InjectPresence
    [online] = await events_of(
        messenger,
        "seen",
        kinds,
        inject(presence("seen", from_lid=LID, available=True), metadata=messenger.metadata),
    )
    assert online.presence_changed.jid == SENDER_JID
    assert online.presence_changed.lid == f"{LID}@lid"
    assert online.presence_changed.available
    assert not online.presence_changed.HasField("last_seen")
    seen = Timestamp(seconds=1_790_000_000)
    [offline] = await events_of(
        messenger,
        "seen",
        kinds,
        inject(presence("seen", available=False, last_seen=seen), metadata=messenger.metadata),
    )
    assert not offline.presence_changed.available
    assert offline.presence_changed.last_seen == seen


async def test_typing_and_recording_arrive_as_chat_presence_events(messenger: Messenger) -> None:
    await messenger.ready("typing", PHONE)
    inject = messenger.client.sim.InjectPresence
    states = [pb.CHAT_PRESENCE_COMPOSING, pb.CHAT_PRESENCE_RECORDING, pb.CHAT_PRESENCE_PAUSED]
    calls = [
        inject(presence("typing", chat_presence=states[0]), metadata=messenger.metadata),
        inject(
            presence("typing", chat_presence=states[1], group_jid=GROUP, from_lid=LID),
            metadata=messenger.metadata,
        ),
        inject(presence("typing", chat_presence=states[2]), metadata=messenger.metadata),
    ]

    async def all_in_order() -> None:
        for call in calls:
            await call

    events = await events_of(
        messenger, "typing", [epb.EVENT_TYPE_CHAT_PRESENCE_CHANGED], all_in_order(), count=3
    )
    got = [e.chat_presence_changed for e in events]
    assert [e.presence for e in got] == states
    assert [e.chat_jid for e in got] == [SENDER_JID, GROUP, SENDER_JID]
    assert {e.sender_jid for e in got} == {SENDER_JID}
    assert got[1].sender_lid == f"{LID}@lid"


async def test_bad_injected_presences_are_refused(messenger: Messenger) -> None:
    await messenger.ready("typing-bad", PHONE)
    cases = [
        (presence("typing-bad"), ["presence"]),
        (presence("typing-bad", available=True, group_jid=GROUP), ["group_jid"]),
        (presence("typing-bad", chat_presence=pb.CHAT_PRESENCE_UNSPECIFIED), ["chat_presence"]),
        (presence("typing-bad", available=True, from_lid="abc"), ["from_lid"]),
        (
            presence("typing-bad", available=False, last_seen=Timestamp(seconds=-(10**12))),
            ["last_seen"],
        ),
    ]
    for request, fields in cases:
        _, violations = await expect_error(
            messenger.client.sim.InjectPresence(request, metadata=messenger.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [field for field, _ in violations] == fields


async def test_receipt_events_name_who_acknowledged_by_phone_and_lid(
    messenger: Messenger,
) -> None:
    await messenger.ready("receipt-lid", PHONE)
    mapping = spb.LidMapping(phone=SENDER, lid=LID)
    await messenger.client.sim.SetLidMappings(
        spb.SetLidMappingsRequest(instance_id="receipt-lid", mappings=[mapping]),
        metadata=messenger.metadata,
    )
    stream = await subscribed(
        messenger,
        only_new=True,
        instance_ids=["receipt-lid"],
        types=[epb.EVENT_TYPE_MESSAGE_STATE_CHANGED],
    )
    message = await messenger.send_text("receipt-lid", SENDER, "hi")
    # queued, sending, sent, delivered: the fourth state of the only message sent
    changes = [e.message_state_changed for e in await take(stream, 4)]
    assert [c.message_id for c in changes] == [message.id] * 4
    assert [c.state for c in changes][-1] == pb.MESSAGE_STATE_DELIVERED
    assert [(c.receipt_from_jid, c.receipt_from_lid) for c in changes[:-1]] == [("", "")] * 3
    assert changes[-1].receipt_from_jid == SENDER_JID
    assert changes[-1].receipt_from_lid == f"{LID}@lid"


async def test_a_presence_arrives_only_after_subscribing(messenger: Messenger) -> None:
    """As on WhatsApp: the simulated phone sends no presence the instance did not ask for."""
    await messenger.ready("unasked", PHONE)
    _, _ = await expect_error(
        messenger.client.sim.InjectPresence(
            presence("unasked", available=True), metadata=messenger.metadata
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await subscribe(messenger, "unasked")
    [online] = await events_of(
        messenger,
        "unasked",
        [epb.EVENT_TYPE_PRESENCE_CHANGED],
        messenger.client.sim.InjectPresence(
            presence("unasked", available=True), metadata=messenger.metadata
        ),
    )
    assert online.presence_changed.jid == SENDER_JID


async def subscriptions_seen(messenger: Messenger, instance_id: str, count: int) -> int:
    """Waits (up to 30 s) until the phone side has seen `count` subscriptions to SENDER;
    returns how many it saw."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        seen = [
            r
            for r in await messenger.received(instance_id)
            if (r.kind, r.recipient_jid) == ("subscribe", SENDER_JID)
        ]
        if len(seen) >= count or asyncio.get_running_loop().time() > deadline:
            return len(seen)
        await asyncio.sleep(0.05)


async def test_subscriptions_are_renewed_after_a_reconnect(messenger: Messenger) -> None:
    """WhatsApp forgets presence subscriptions when the connection drops: the engine
    subscribes again on the new connection, so presences keep arriving."""
    await messenger.ready("renew", PHONE)
    await subscribe(messenger, "renew")
    inject = messenger.client.sim.InjectPresence
    kinds = [epb.EVENT_TYPE_PRESENCE_CHANGED]
    [before] = await events_of(
        messenger,
        "renew",
        kinds,
        inject(presence("renew", available=True), metadata=messenger.metadata),
    )
    assert before.presence_changed.available

    await messenger.client.sim.DropConnection(
        spb.DropConnectionRequest(instance_id="renew"), metadata=messenger.metadata
    )
    await messenger.client.wait_for(
        "renew",
        lambda i: (
            i.state == ipb.INSTANCE_STATE_CONNECTED and i.state_reason == ipb.STATE_REASON_CONNECTED
        ),
    )
    # The new connection subscribed again, with no call from the client.
    assert await subscriptions_seen(messenger, "renew", 2) == 2
    seen = Timestamp(seconds=1_790_000_000)
    [after] = await events_of(
        messenger,
        "renew",
        kinds,
        inject(presence("renew", available=False, last_seen=seen), metadata=messenger.metadata),
    )
    assert after.presence_changed.jid == SENDER_JID
    assert not after.presence_changed.available


async def test_a_logout_forgets_the_subscriptions(messenger: Messenger) -> None:
    """The next pairing may be another account: it inherits no subscription."""
    await messenger.ready("relink", PHONE)
    await subscribe(messenger, "relink")
    await messenger.client.sim.LogoutFromPhone(
        spb.LogoutFromPhoneRequest(instance_id="relink"), metadata=messenger.metadata
    )
    await messenger.client.wait_for("relink", lambda i: i.state == ipb.INSTANCE_STATE_LOGGED_OUT)
    await messenger.client.pair("relink", PHONE)
    _, _ = await expect_error(
        messenger.client.sim.InjectPresence(
            presence("relink", available=True), metadata=messenger.metadata
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
