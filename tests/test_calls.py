"""Incoming calls over real gRPC with the simulator: each is a call_received event; an
instance whose call settings say so declines it (the simulated WhatsApp records the
rejection) and answers the caller with a text queued through the scheduler; settings are
validated field by field and shown by GetInstance."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.test_conversation import PHONE, phone_entry, sent
from tests.test_events import messenger, subscribed, take
from tests.test_inbound import SENDER, SENDER_JID
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["messenger"]

LID = "98765432109876"


async def set_calls(
    messenger: Messenger, instance_id: str, settings: ipb.CallSettings | None
) -> ipb.Instance:
    instance = ipb.Instance(id=instance_id)
    if settings is not None:
        instance.call_settings.CopyFrom(settings)
    request = ipb.UpdateInstanceRequest(
        instance=instance, update_mask=field_mask_pb2.FieldMask(paths=["call_settings"])
    )
    reply = await messenger.client.instances.UpdateInstance(request, metadata=messenger.metadata)
    return reply.instance


async def call(messenger: Messenger, instance_id: str, call_id: str) -> epb.CallReceived:
    stream = await subscribed(
        messenger, only_new=True, instance_ids=[instance_id], types=[epb.EVENT_TYPE_CALL_RECEIVED]
    )
    request = spb.InjectCallRequest(
        instance_id=instance_id, from_phone=SENDER, from_lid=LID, call_id=call_id
    )
    reply = await messenger.client.sim.InjectCall(request, metadata=messenger.metadata)
    assert reply.call_id == call_id
    [event] = await take(stream, 1)
    return event.call_received


async def test_a_call_rings_on_by_default(messenger: Messenger) -> None:
    await messenger.ready("ring", PHONE)
    received = await call(messenger, "ring", "CALL-A")
    assert (received.call_id, received.caller_jid) == ("CALL-A", SENDER_JID)
    assert received.caller_lid == f"{LID}@lid"
    assert received.HasField("offer_time")
    assert not received.rejected
    assert received.reply_message_id == ""
    assert [r for r in await messenger.received("ring") if r.kind == "call_rejected"] == []


async def test_calls_are_rejected_and_answered_through_the_scheduler(
    messenger: Messenger,
) -> None:
    await messenger.ready("busy", PHONE)
    settings = ipb.CallSettings(reject_calls=True, reply_text="{Sorry|Hi}, I can't talk now")
    shown = await set_calls(messenger, "busy", settings)
    assert shown.call_settings == settings
    received = await call(messenger, "busy", "CALL-B")
    assert received.rejected
    assert received.reply_message_id
    [rejection] = [r for r in await messenger.received("busy") if r.kind == "call_rejected"]
    assert (rejection.recipient_jid, rejection.target_message_id) == (SENDER_JID, "CALL-B")
    reply = await messenger.get("busy", received.reply_message_id)
    assert (reply.kind, reply.recipient_jid) == ("text", SENDER_JID)
    done = await sent(messenger, "busy", reply)
    entry = await phone_entry(messenger, "busy", done.whatsapp_message_id)
    assert entry.text in ("Sorry, I can't talk now", "Hi, I can't talk now")

    # Without a reply text: rejected, nothing queued.
    await set_calls(messenger, "busy", ipb.CallSettings(reject_calls=True))
    silent = await call(messenger, "busy", "CALL-C")
    assert silent.rejected
    assert silent.reply_message_id == ""
    listed = await messenger.stub.ListMessages(
        pb.ListMessagesRequest(instance_id="busy"), metadata=messenger.metadata
    )
    assert len(listed.messages) == 1

    # An unset setting restores the default: calls ring on.
    cleared = await set_calls(messenger, "busy", None)
    assert cleared.call_settings == ipb.CallSettings()
    assert not (await call(messenger, "busy", "CALL-D")).rejected


async def test_bad_call_settings_are_refused_with_details(messenger: Messenger) -> None:
    await messenger.ready("calls-bad", PHONE)
    cases = [
        ipb.CallSettings(reject_calls=False, reply_text="hi"),
        ipb.CallSettings(reject_calls=True, reply_text="hi {name}"),
        ipb.CallSettings(reject_calls=True, reply_text="x" * 4097),
    ]
    for settings in cases:
        _, violations = await expect_error(
            set_calls(messenger, "calls-bad", settings), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert [field for field, _ in violations] == ["instance.call_settings.reply_text"]
    bad_call = spb.InjectCallRequest(instance_id="calls-bad", from_phone="123")
    _, violations = await expect_error(
        messenger.client.sim.InjectCall(bad_call, metadata=messenger.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [field for field, _ in violations] == ["from_phone"]
