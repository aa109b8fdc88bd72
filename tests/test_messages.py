"""Sending through the scheduler, over real gRPC, with the simulator in a worker process."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.conftest import FAST_SIM, RunningGateway, started_gateway
from tests.messaging import FAST_POLICY, Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from zapgate.ratelimit.health import PauseRules
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb
from zapgate.v1.event_pb2_grpc import EventServiceStub

S = pb.MessageState
PHONE = "+5511970000001"


@pytest.fixture
async def messenger(running: RunningGateway, tenant: str) -> Messenger:
    return Messenger(await SimClient.for_tenant(running, tenant))


async def test_a_text_is_queued_sent_delivered_and_read(messenger: Messenger) -> None:
    await messenger.ready("m1", PHONE)
    queued = await messenger.send_text(
        "m1", "+5511960000001", "{Hi|Hello} {name}!", variables={"name": "Ana"}
    )
    assert queued.state == S.MESSAGE_STATE_QUEUED
    read = await messenger.wait_message("m1", queued.id, lambda m: m.state == S.MESSAGE_STATE_READ)
    assert read.whatsapp_message_id
    [received] = await messenger.received("m1")
    assert received.text in {"Hi Ana!", "Hello Ana!"}
    assert received.recipient_jid == "5511960000001@s.whatsapp.net"
    assert received.whatsapp_message_id == read.whatsapp_message_id


async def send_many(
    messenger: Messenger, instance_id: str, recipients: list[str], count: int
) -> list[pb.Message]:
    sent = []
    for n in range(count):
        for recipient in recipients:
            sent.append(await messenger.send_text(instance_id, recipient, f"{recipient} #{n}"))
    return sent


async def wait_all(
    messenger: Messenger, instance_id: str, messages: list[pb.Message], states: set[int]
) -> list[pb.Message]:
    return [
        await messenger.wait_message(instance_id, m.id, lambda x: x.state in states)
        for m in messages
    ]


async def test_order_per_chat_and_gaps_with_jitter(messenger: Messenger) -> None:
    await messenger.ready("order", PHONE)
    recipients = ["+5511960000011", "+5511960000012"]
    messages = await send_many(messenger, "order", recipients, 6)
    await wait_all(
        messenger,
        "order",
        messages,
        {S.MESSAGE_STATE_SENT, S.MESSAGE_STATE_DELIVERED, S.MESSAGE_STATE_READ},
    )
    received = [r for r in await messenger.received("order") if r.kind == "text"]
    assert len(received) == 12
    for recipient in recipients:
        texts = [r.text for r in received if r.recipient_jid.startswith(recipient[1:])]
        assert texts == [f"{recipient} #{n}" for n in range(6)]
    times = [r.receive_time.ToMicroseconds() / 1e6 for r in received]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - 0.005  # the minimum gap (a lower bound is never noisy)
    assert len({round(g, 3) for g in gaps}) > 3  # jitter: not one constant delay


async def test_the_minute_cap_holds_and_stats_say_so(messenger: Messenger) -> None:
    policy = pb_policy(per_minute=3)
    await messenger.ready("capped", PHONE, policy)
    messages = await send_many(messenger, "capped", ["+5511960000021"], 6)
    await wait_all(
        messenger,
        "capped",
        messages[:3],
        {S.MESSAGE_STATE_SENT, S.MESSAGE_STATE_DELIVERED, S.MESSAGE_STATE_READ},
    )
    stats = await instance_stats(messenger, "capped")
    assert stats.remaining_minute == 0
    assert stats.sent_today == 3
    assert stats.queue_depth == 3
    assert stats.next_send_time.ToMicroseconds() > 0
    later = [await messenger.get("capped", m.id) for m in messages[3:]]
    assert {m.state for m in later} == {S.MESSAGE_STATE_QUEUED}
    assert len([r for r in await messenger.received("capped") if r.kind == "text"]) == 3


def pb_policy(**changes: object) -> ipb.SendPolicy:
    policy = ipb.SendPolicy()
    policy.CopyFrom(FAST_POLICY)
    for name, value in changes.items():
        setattr(policy, name, value)
    return policy


async def instance_stats(messenger: Messenger, instance_id: str) -> ipb.InstanceStats:
    reply = await messenger.client.instances.GetInstanceStats(
        ipb.GetInstanceStatsRequest(instance_id=instance_id), metadata=messenger.metadata
    )
    return reply.stats


async def test_a_scheduled_message_says_it_waits_for_its_send_at(messenger: Messenger) -> None:
    await messenger.ready("later-on", PHONE)
    send_at = Timestamp(seconds=int(time.time()) + 3600)  # an input; nothing waits for it
    queued = await messenger.send_text("later-on", "+5511960000071", "in an hour", send_at=send_at)
    assert queued.state == S.MESSAGE_STATE_QUEUED
    assert queued.waiting_reason == pb.WAITING_REASON_SEND_AT
    assert queued.next_attempt_time == send_at
    got = await messenger.get("later-on", queued.id)
    assert (got.waiting_reason, got.next_attempt_time) == (pb.WAITING_REASON_SEND_AT, send_at)
    listed = await messenger.stub.ListMessages(
        pb.ListMessagesRequest(instance_id="later-on"), metadata=messenger.metadata
    )
    assert [(m.id, m.waiting_reason) for m in listed.messages] == [
        (queued.id, pb.WAITING_REASON_SEND_AT)
    ]
    stats = await instance_stats(messenger, "later-on")
    assert stats.next_message_id == queued.id
    assert stats.waiting_reason == pb.WAITING_REASON_SEND_AT
    assert stats.next_attempt_time == send_at
    assert stats.next_send_time == send_at  # was unset while only a scheduled message waited


async def test_a_message_in_quiet_hours_says_when_they_end(messenger: Messenger) -> None:
    hour = datetime.now(UTC).hour  # quiet for this hour and the next: no race at the turn
    policy = ipb.SendPolicy()
    policy.CopyFrom(FAST_POLICY)
    policy.quiet_start_hour, policy.quiet_end_hour = hour, (hour + 2) % 24
    await messenger.ready("night", PHONE, policy)
    queued = await messenger.send_text("night", "+5511960000072", "good morning")
    created = queued.create_time.ToDatetime(tzinfo=UTC)
    top = created.replace(minute=0, second=0, microsecond=0)
    quiet_end = top + timedelta(hours=(hour + 2 - created.hour) % 24)
    got = await messenger.get("night", queued.id)
    assert got.state == S.MESSAGE_STATE_QUEUED
    assert got.waiting_reason == pb.WAITING_REASON_QUIET_HOURS
    assert got.next_attempt_time.ToDatetime(tzinfo=UTC) == quiet_end
    stats = await instance_stats(messenger, "night")
    assert stats.waiting_reason == pb.WAITING_REASON_QUIET_HOURS
    assert stats.next_send_time.ToDatetime(tzinfo=UTC) == quiet_end


async def test_the_same_idempotency_key_never_makes_a_second_message(messenger: Messenger) -> None:
    await messenger.ready("idem", PHONE)
    request = pb.SendMessageRequest(
        instance_id="idem",
        phone="+5511960000031",
        text=pb.Text(body="once"),
        idempotency_key="order-42",
    )
    first = await messenger.stub.SendMessage(request, metadata=messenger.metadata)
    second = await messenger.stub.SendMessage(request, metadata=messenger.metadata)
    assert first.created
    assert not second.created
    assert second.message.id == first.message.id
    await messenger.wait_message(
        "idem", first.message.id, lambda m: m.state == S.MESSAGE_STATE_READ
    )
    assert [r.text for r in await messenger.received("idem") if r.kind == "text"] == ["once"]
    stats = await instance_stats(messenger, "idem")
    assert (stats.sent_today, stats.delivery_rate, stats.read_rate) == (1, 1.0, 1.0)


async def test_cancel_only_before_hand_off(messenger: Messenger) -> None:
    await messenger.ready("cancel", PHONE)
    await pause(messenger, "cancel")
    queued = await messenger.send_text("cancel", "+5511960000041", "never")
    cancel = pb.CancelMessageRequest(instance_id="cancel", message_id=queued.id)
    cancelled = await messenger.stub.CancelMessage(cancel, metadata=messenger.metadata)
    assert cancelled.message.state == S.MESSAGE_STATE_CANCELLED
    info, _ = await expect_error(
        messenger.stub.CancelMessage(cancel, metadata=messenger.metadata),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert info.reason == "MESSAGE_NOT_CANCELLABLE"
    await resume(messenger, "cancel")
    sent = await messenger.send_text("cancel", "+5511960000041", "this one")
    await messenger.wait_message("cancel", sent.id, lambda m: m.state == S.MESSAGE_STATE_READ)
    assert [r.text for r in await messenger.received("cancel") if r.kind == "text"] == ["this one"]


async def pause(messenger: Messenger, instance_id: str) -> ipb.Instance:
    reply = await messenger.client.instances.PauseSending(
        ipb.PauseSendingRequest(instance_id=instance_id, reason="test"), metadata=messenger.metadata
    )
    return reply.instance


async def resume(messenger: Messenger, instance_id: str) -> ipb.Instance:
    reply = await messenger.client.instances.ResumeSending(
        ipb.ResumeSendingRequest(instance_id=instance_id), metadata=messenger.metadata
    )
    return reply.instance


async def test_a_message_expires_while_waiting(messenger: Messenger) -> None:
    await messenger.ready("expiry", PHONE)
    await pause(messenger, "expiry")
    soon = Timestamp()
    soon.FromMicroseconds(int((time.time() + 0.3) * 1e6))
    queued = await messenger.send_text("expiry", "+5511960000051", "late", expire_time=soon)
    expired = await messenger.wait_message(
        "expiry", queued.id, lambda m: m.state == S.MESSAGE_STATE_EXPIRED
    )
    assert expired.expire_time == soon


async def test_messages_wait_for_a_disconnected_instance(messenger: Messenger) -> None:
    await messenger.client.create("later")
    await messenger.set_policy("later", FAST_POLICY)
    queued = await messenger.send_text("later", "+5511960000061", "when you are online")
    await asyncio.sleep(0.3)
    assert (await messenger.get("later", queued.id)).state == S.MESSAGE_STATE_QUEUED
    await messenger.client.pair("later", PHONE)
    await messenger.wait_message("later", queued.id, lambda m: m.state == S.MESSAGE_STATE_READ)


async def test_a_temporary_ban_pauses_sending_until_resumed(messenger: Messenger) -> None:
    await messenger.ready("banned", PHONE)
    await messenger.client.sim.TemporaryBan(
        spb.TemporaryBanRequest(instance_id="banned", code=101, expires_in_seconds=0.3),
        metadata=messenger.metadata,
    )
    paused = await messenger.client.wait_for("banned", lambda i: bool(i.sending_paused_reason))
    assert paused.sending_paused_reason == "temporary_ban_101"
    queued = await messenger.send_text("banned", "+5511960000071", "after the ban")
    await messenger.client.wait_state("banned", ipb.INSTANCE_STATE_CONNECTED)
    await asyncio.sleep(0.3)
    assert (await messenger.get("banned", queued.id)).state == S.MESSAGE_STATE_QUEUED
    assert (await instance_stats(messenger, "banned")).paused_reason == "temporary_ban_101"
    await resume(messenger, "banned")
    await messenger.wait_message("banned", queued.id, lambda m: m.state == S.MESSAGE_STATE_READ)


async def test_refusals_fail_the_message_and_463_pauses_the_instance(messenger: Messenger) -> None:
    await messenger.ready("refused", PHONE)
    for phone, code in (("+5511960000081", "not_on_whatsapp"), ("+5511960000082", "463")):
        await messenger.client.sim.FailSends(
            spb.FailSendsRequest(instance_id="refused", phones=[phone], code=code),
            metadata=messenger.metadata,
        )
    missing = await messenger.send_text("refused", "+5511960000081", "hello?")
    failed = await messenger.wait_message(
        "refused", missing.id, lambda m: m.state == S.MESSAGE_STATE_FAILED
    )
    # The reason is the stable code alone; the words are apart.
    assert failed.failure_reason == "not_on_whatsapp"
    assert failed.failure_detail == "+5511960000081 is not on WhatsApp"
    spam = await messenger.send_text("refused", "+5511960000082", "buy now")
    refused = await messenger.wait_message(
        "refused", spam.id, lambda m: m.state == S.MESSAGE_STATE_FAILED
    )
    assert refused.failure_reason == "463"
    assert "463" in refused.failure_detail
    # Its event says the same.
    subscription = EventServiceStub(messenger.client.channel).Subscribe(
        epb.SubscribeRequest(types=[epb.EVENT_TYPE_MESSAGE_STATE_CHANGED]),
        metadata=messenger.metadata,
    )
    failures = {}
    async for response in subscription:
        change = response.event.message_state_changed
        if change.state == S.MESSAGE_STATE_FAILED:
            failures[change.message_id] = (change.failure_reason, change.failure_detail)
        if len(failures) == 2:
            break
    subscription.cancel()
    assert failures == {
        missing.id: ("not_on_whatsapp", failed.failure_detail),
        spam.id: ("463", refused.failure_detail),
    }
    instance = await messenger.client.wait_for("refused", lambda i: bool(i.sending_paused_reason))
    assert "463" in instance.sending_paused_reason


async def test_media_location_and_contact_arrive(messenger: Messenger) -> None:
    await messenger.ready("media", PHONE)
    png = bytes(range(256)) * 10
    requests = [
        pb.SendMessageRequest(image=pb.Media(data=png, mime_type="image/png", caption="pic")),
        pb.SendMessageRequest(
            document=pb.Media(
                data=b"%PDF-1.4", mime_type="application/pdf", file_name="a.pdf", caption="doc"
            )
        ),
        pb.SendMessageRequest(audio=pb.Audio(data=b"OggS", mime_type="audio/ogg", voice_note=True)),
        pb.SendMessageRequest(location=pb.Location(latitude=-23.5, longitude=-46.6, name="SP")),
        pb.SendMessageRequest(contact=pb.ContactCard(display_name="Ana", phone="+5511912345678")),
    ]
    sent = []
    for request in requests:
        request.instance_id, request.phone = "media", "+5511960000091"
        sent.append(
            (await messenger.stub.SendMessage(request, metadata=messenger.metadata)).message
        )
    assert [m.kind for m in sent] == ["image", "document", "voice_note", "location", "contact"]
    await wait_all(messenger, "media", sent, {S.MESSAGE_STATE_READ})
    received = await messenger.received("media")
    assert [(r.kind, r.text) for r in received] == [
        ("image", "pic"),
        ("document", "doc"),
        ("audio", ""),
        ("location", "SP"),
        ("contact", "Ana"),
    ]
    assert received[0].media_sha256 == hashlib.sha256(png).hexdigest()
    assert received[0].media_size == len(png)


BAD_SENDS = [
    (dict(phone="+5511960000001", text=pb.Text(body="   ")), "text.body"),
    (dict(phone="+5511960000001"), "content"),
    (dict(phone="12345", text=pb.Text(body="x")), "phone"),
    (dict(jid="nope@x", text=pb.Text(body="x")), "jid"),
    (dict(text=pb.Text(body="x")), "recipient"),
    (dict(phone="+5511960000001", text=pb.Text(body="Hi {who}")), "text.body"),
    (dict(phone="+5511960000001", text=pb.Text(body="{Hi|}")), "text.body"),
    (
        dict(
            phone="+5511960000001",
            image=pb.Media(data=b"x" * (16 * 1024 * 1024 + 1), mime_type="image/png"),
        ),
        "image.data",
    ),
    (dict(phone="+5511960000001", image=pb.Media(data=b"x")), "image.mime_type"),
    (
        dict(phone="+5511960000001", location=pb.Location(latitude=91, longitude=0)),
        "location.latitude",
    ),
    (dict(phone="+5511960000001", contact=pb.ContactCard(display_name="A")), "contact.phone"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_SENDS, ids=[f for _, f in BAD_SENDS])
async def test_bad_input_is_rejected_and_nothing_is_queued(
    messenger: Messenger, fields: dict[str, object], field: str
) -> None:
    await messenger.client.create("strict")
    request = pb.SendMessageRequest(instance_id="strict", **fields)  # type: ignore[arg-type]
    _, violations = await expect_error(
        messenger.stub.SendMessage(request, metadata=messenger.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field in [v[0] for v in violations]
    listed = await messenger.stub.ListMessages(
        pb.ListMessagesRequest(instance_id="strict"), metadata=messenger.metadata
    )
    assert list(listed.messages) == []


async def test_list_messages_pages_newest_first_and_filters(messenger: Messenger) -> None:
    await messenger.client.create("listing")
    sent = [await messenger.send_text("listing", "+5511960000101", f"m{n}") for n in range(5)]
    seen, token = [], ""
    while True:
        page = await messenger.stub.ListMessages(
            pb.ListMessagesRequest(
                instance_id="listing", page_size=2, page_token=token, state=S.MESSAGE_STATE_QUEUED
            ),
            metadata=messenger.metadata,
        )
        seen += [m.id for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert seen == [m.id for m in reversed(sent)]


async def test_a_bad_policy_is_rejected(messenger: Messenger) -> None:
    await messenger.client.create("policy")
    bad = pb_policy(per_minute=0, timezone="Mars/Olympus")
    _, violations = await expect_error(
        messenger.set_policy("policy", bad), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert {v[0] for v in violations} == {
        "instance.send_policy.per_minute",
        "instance.send_policy.timezone",
    }


async def test_a_falling_delivery_rate_pauses_sending(tmp_path: Path) -> None:
    """Nothing gets delivered (the simulator's phones never answer): after the grace time the
    delivery rate of the last sends is judged, and the instance pauses itself."""
    never = dataclasses.replace(FAST_SIM, delivered_seconds=-1.0, read_seconds=-1.0)
    rules = PauseRules(receipt_grace_seconds=0.2, delivery_window=5, min_delivery_ratio=0.5)
    async with started_gateway(tmp_path, sim_timings=never, pause_rules=rules) as gateway:
        messenger = Messenger(await SimClient.for_tenant(gateway, "acme"))
        await messenger.ready("silent", PHONE)
        for n in range(12):
            await messenger.send_text("silent", f"+55119600003{n:02d}", f"n{n}")
        paused = await messenger.client.wait_for("silent", lambda i: bool(i.sending_paused_reason))
        assert paused.sending_paused_reason.startswith("low_delivery_rate")
        stats = await instance_stats(messenger, "silent")
        assert stats.queue_depth > 0  # the rest waits for a person to look
        assert stats.delivery_rate == 0.0


async def test_simulated_failures_belong_to_one_instance(messenger: Messenger) -> None:
    await messenger.ready("failing", PHONE)
    await messenger.ready("healthy", "+5511970000002")  # same worker process
    await messenger.client.sim.FailSends(
        spb.FailSendsRequest(
            instance_id="failing", phones=["+5511960000111"], code="not_on_whatsapp"
        ),
        metadata=messenger.metadata,
    )
    refused = await messenger.send_text("failing", "+5511960000111", "x")
    fine = await messenger.send_text("healthy", "+5511960000111", "y")
    await messenger.wait_message("failing", refused.id, lambda m: m.state == S.MESSAGE_STATE_FAILED)
    await messenger.wait_message("healthy", fine.id, lambda m: m.state == S.MESSAGE_STATE_READ)
