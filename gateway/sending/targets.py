"""The messages a reply quotes and a reaction, edit or revoke acts on. Each is named by
zapgate's id (one the instance sent) or WhatsApp's (one it received), and always looked up
within the calling tenant and instance: another instance's message is NOT_FOUND."""

from __future__ import annotations

import re
from dataclasses import dataclass

from zapgate.gateway.rpc.errors import MessageNotActionable, MessageNotFound
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.sessions.engine import ACTIONS, MessageRef
from zapgate.v1 import message_pb2

M = message_pb2.MessageState
SENT_STATES = (M.MESSAGE_STATE_SENT, M.MESSAGE_STATE_DELIVERED, M.MESSAGE_STATE_READ)
# WhatsApp's windows: a text can be edited for 15 minutes after it was sent, and a message
# deleted for everyone for about two days (60 hours).
EDIT_WINDOW_SECONDS = 15 * 60
REVOKE_WINDOW_SECONDS = 60 * 60 * 60
_DEVICE = re.compile(r":[0-9]+@")


@dataclass(frozen=True)
class Target:
    ref: MessageRef
    own: MessageRecord | None  # the instance's own message; None for a received one


class Targets:
    def __init__(
        self,
        messages: MessageRepository,
        inbound: InboundRepository,
        instances: InstanceRepository,
    ) -> None:
        self._messages = messages
        self._inbound = inbound
        self._instances = instances

    async def find(self, tenant: str, instance_id: str, message_id: str) -> Target:
        """MessageNotFound unless the instance sent or received `message_id`;
        MessageNotActionable when it is the instance's own and has no WhatsApp id yet."""
        own = await self._messages.get(tenant, instance_id, message_id)
        if own is not None:
            return Target(await self._own_ref(own), own)
        received = await self._inbound.received(tenant, instance_id, message_id)
        if received is None:
            raise MessageNotFound(message_id)
        ref = MessageRef(
            message_id=received.message_id,
            chat_jid=received.chat_jid,
            sender_jid=received.sender_jid,
            from_me=received.from_me,
            kind=received.kind,
            text=received.text,
        )
        return Target(ref, None)

    async def _own_ref(self, own: MessageRecord) -> MessageRef:
        if own.kind in ACTIONS:
            raise MessageNotActionable(own.id, "not_quotable", f"it is a {own.kind}")
        if not own.whatsapp_message_id:
            state = M.Name(own.state)  # type: ignore[arg-type]
            raise MessageNotActionable(own.id, "not_sent", f"it has not been sent ({state})")
        instance = await self._instances.require(own.tenant, own.instance_id)
        content = own.content
        text = content.get("sent_text") or content.get("text") or content.get("caption") or ""
        text = text or content.get("location_name") or content.get("contact_name") or ""
        text = text or content.get("poll_question") or ""
        return MessageRef(
            message_id=own.whatsapp_message_id,
            chat_jid=own.recipient_jid,
            sender_jid=_DEVICE.sub("@", instance.jid),
            from_me=True,
            kind=own.kind,
            text=str(text),
        )

    async def own(self, tenant: str, instance_id: str, message_id: str, action: str) -> Target:
        """The instance's own sent message that an edit or a revoke acts on."""
        target = await self.find(tenant, instance_id, message_id)
        own = target.own
        if own is None:
            raise MessageNotActionable(
                message_id, "not_own", f"only the instance's own messages can take a {action}"
            )
        if own.state not in SENT_STATES or own.sent_time_us is None:
            state = M.Name(own.state)  # type: ignore[arg-type]
            raise MessageNotActionable(own.id, "not_sent", f"it is {state}, not sent")
        return target


def check_window(target: Target, now: float, action: str) -> None:
    """Raises MessageNotActionable past WhatsApp's edit or delete window."""
    own = target.own
    assert own is not None
    assert own.sent_time_us is not None
    window = EDIT_WINDOW_SECONDS if action == "edit" else REVOKE_WINDOW_SECONDS
    age = now - own.sent_time_us / 1e6
    if age > window:
        raise MessageNotActionable(
            own.id,
            f"{action}_window_passed",
            f"it was sent {age / 60:.0f} minutes ago; WhatsApp allows a {action} for "
            f"{window // 60} minutes",
        )
