"""What the account's phone changes in a chat, over real gRPC with the simulator: a
disappearing-messages timer switched (by the contact or in a group) arrives as a typed
event and is no unread message; messages read on the phone arrive as read_elsewhere and
are marked read in the chat store, only for the instance they belong to."""

from __future__ import annotations

import grpc

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_chats import Chats, chats
from tests.test_events import messenger, subscribed, take
from tests.test_groups import ANA, Groups, groups
from tests.test_inbound import SENDER_JID, inject, received
from zapgate.v1 import event_pb2 as pb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["chats", "groups", "messenger"]

PHONE = "+5511970000960"
GROUP = "120363025246125777@g.us"
WEEK = 604_800


async def test_a_timer_switched_on_and_off_arrives_with_its_seconds_and_who(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("timer", PHONE)
    await inject(messenger, "timer", text="oi")
    on = await received(
        messenger, "timer", ephemeral_setting=pb.EphemeralSetting(expiration_seconds=WEEK)
    )
    message = on.message_received
    assert message.WhichOneof("content") == "ephemeral_setting"
    assert message.ephemeral_setting.expiration_seconds == WEEK
    assert (message.chat_jid, message.sender_jid) == (SENDER_JID, SENDER_JID)

    off = await received(
        messenger,
        "timer",
        ephemeral_setting=pb.EphemeralSetting(expiration_seconds=0),
        group_jid=GROUP,
        from_lid="208734900112299",
    )
    message = off.message_received
    assert message.WhichOneof("content") == "ephemeral_setting"
    assert message.ephemeral_setting.expiration_seconds == 0
    assert (message.group_jid, message.sender_lid) == (GROUP, "208734900112299@lid")

    # A notice, not a message: the chat keeps its one unread text, the group gets no chat.
    chat = await chats.get("timer", SENDER_JID)
    assert (chat.unread_count, chat.last_message_preview) == (1, "oi")
    assert [c.jid for c in (await chats.list("timer")).chats] == [SENDER_JID]


async def test_a_groups_timer_set_by_a_member_is_a_group_change(groups: Groups) -> None:
    # In a group, WhatsApp announces the timer as a group notification (whatsmeow's
    # GroupInfo with Ephemeral), not as a message.
    await groups.ready("group-timer", PHONE)
    group = (await groups.create("group-timer", "Vendas", ANA)).group
    events = await groups.events("group-timer")
    await groups.change("group-timer", ANA, group.jid, ephemeral_seconds=WEEK)
    await groups.change("group-timer", ANA, group.jid, ephemeral_seconds=0)
    # The creation's own PARTICIPANTS_ADDED may still be on its way when the stream starts.
    changes = []
    async for response in events:
        change = response.event.group_changed
        if change.change == pb.GROUP_CHANGE_EPHEMERAL:
            changes.append(change)
        if len(changes) == 2:
            break
    events.cancel()  # type: ignore[attr-defined]
    ana = f"{ANA.lstrip('+')}@s.whatsapp.net"
    assert [(c.change, c.ephemeral_seconds, c.actor_jid) for c in changes] == [
        (pb.GROUP_CHANGE_EPHEMERAL, WEEK, ana),
        (pb.GROUP_CHANGE_EPHEMERAL, 0, ana),
    ]
    _, bad = await expect_error(
        groups.change("group-timer", ANA, group.jid, ephemeral_seconds=-5),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "ephemeral_seconds" in [name for name, _ in bad]


async def test_a_negative_timer_is_a_field_violation(messenger: Messenger) -> None:
    await messenger.ready("bad-timer", PHONE)
    setting = pb.EphemeralSetting(expiration_seconds=-1)
    _, bad = await expect_error(
        inject(messenger, "bad-timer", ephemeral_setting=setting), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "ephemeral_setting.expiration_seconds" in [name for name, _ in bad]


async def read_on_phone(messenger: Messenger, instance_id: str, chat: str, ids: list[str]) -> None:
    request = spb.ReadOnPhoneRequest(instance_id=instance_id, chat_jid=chat, message_ids=ids)
    await messenger.client.sim.ReadOnPhone(request, metadata=messenger.metadata)


async def read_elsewhere(
    messenger: Messenger, instance_id: str, chat: str, ids: list[str]
) -> pb.ReadElsewhere:
    """Reads `ids` on the account's phone; the read_elsewhere event it became."""
    stream = await subscribed(
        messenger,
        only_new=True,
        instance_ids=[instance_id],
        types=[pb.EVENT_TYPE_READ_ELSEWHERE],
    )
    await read_on_phone(messenger, instance_id, chat, ids)
    [event] = await take(stream, 1)
    assert event.instance_id == instance_id
    return event.read_elsewhere


async def test_messages_read_on_the_phone_are_read_in_the_chat_store(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("phone-read", PHONE)
    ids = [await inject(messenger, "phone-read", text=f"m{n}") for n in range(3)]
    assert (await chats.get("phone-read", SENDER_JID)).unread_count == 3

    read = await read_elsewhere(messenger, "phone-read", SENDER_JID, ids[:2])
    assert (read.chat_jid, list(read.message_ids), read.marked) == (SENDER_JID, ids[:2], 2)
    assert read.HasField("read_time")
    assert (await chats.get("phone-read", SENDER_JID)).unread_count == 1
    assert (await chats.message("phone-read", ids[0])).HasField("read_time")
    assert not (await chats.message("phone-read", ids[2])).HasField("read_time")

    # Read again (or ids the store never had): reported, nothing more to mark.
    again = await read_elsewhere(messenger, "phone-read", SENDER_JID, [ids[1], "3A0000NONE"])
    assert again.marked == 0
    assert (await chats.get("phone-read", SENDER_JID)).unread_count == 1
    # MarkRead "up to" the newest sends a receipt only for the one the phone did not read.
    request = mpb.MarkReadRequest(instance_id="phone-read", up_to_message_id=ids[2])
    reply = await messenger.stub.MarkRead(request, metadata=messenger.metadata)
    assert reply.marked == 1
    reads = [r for r in await messenger.received("phone-read") if r.kind == "read"]
    assert [r.target_message_id for r in reads] == [ids[2]]
    assert (await chats.get("phone-read", SENDER_JID)).unread_count == 0
    last = await read_elsewhere(messenger, "phone-read", SENDER_JID, [ids[2]])
    assert last.marked == 0


async def test_another_tenants_phone_cannot_mark_these_messages_read(
    running: RunningGateway, messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("kept", PHONE)
    secret = await inject(messenger, "kept", text="segredo")
    intruder = Messenger(await SimClient.for_tenant(running, "t-intruder-read"))
    await intruder.ready("kept", "+5511970000961")  # the same instance id, another tenant
    read = await read_elsewhere(intruder, "kept", SENDER_JID, [secret])
    assert read.marked == 0
    assert (await chats.get("kept", SENDER_JID)).unread_count == 1
    assert not (await chats.message("kept", secret)).HasField("read_time")


async def test_bad_phone_reads_are_field_violations(messenger: Messenger) -> None:
    await messenger.ready("bad-read", PHONE)
    cases = [
        ({"chat_jid": "ana", "message_ids": ["3EB0"]}, "chat_jid"),
        ({"chat_jid": SENDER_JID}, "message_ids"),
        ({"chat_jid": SENDER_JID, "message_ids": [""]}, "message_ids[0]"),
        ({"chat_jid": SENDER_JID, "message_ids": ["x"] * 501}, "message_ids"),
    ]
    for fields, field in cases:
        request = spb.ReadOnPhoneRequest(instance_id="bad-read", **fields)  # type: ignore[arg-type]
        _, bad = await expect_error(
            messenger.client.sim.ReadOnPhone(request, metadata=messenger.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert field in [name for name, _ in bad], fields
