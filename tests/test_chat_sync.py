"""What the account's phone changes in a chat, over real gRPC with the simulator: a
disappearing-messages timer switched (by the contact or in a group) arrives as a typed
event and is no unread message."""

from __future__ import annotations

import grpc

from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.test_chats import Chats, chats
from tests.test_events import messenger
from tests.test_inbound import SENDER_JID, inject, received
from zapgate.v1 import event_pb2 as pb

__all__ = ["chats", "messenger"]

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


async def test_a_negative_timer_is_a_field_violation(messenger: Messenger) -> None:
    await messenger.ready("bad-timer", PHONE)
    setting = pb.EphemeralSetting(expiration_seconds=-1)
    _, bad = await expect_error(
        inject(messenger, "bad-timer", ephemeral_setting=setting), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "ephemeral_setting.expiration_seconds" in [name for name, _ in bad]
