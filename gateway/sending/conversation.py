"""What a conversation needs beyond new messages: replies that quote, reactions, edits and
deletions for everyone (each queued through the central scheduler as a message, so a chat's
order is kept), read receipts and chat presences (paced per instance: they are no messages,
but a runaway caller must not flood WhatsApp with them).

Every message named is looked up within the calling tenant and instance (`Targets`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from zapgate.gateway.connections.engines import Engines
from zapgate.gateway.rpc.errors import (
    FieldViolation,
    InvalidArgument,
    MessageNotActionable,
    MessageNotFound,
    RateLimited,
)
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.targets import Target, Targets, check_window
from zapgate.gateway.store.inbound import InboundRepository, ReceivedMessage
from zapgate.gateway.store.messages import MessageRecord
from zapgate.ratelimit.pacing import Pacer

# Read receipts and presences: a burst of 10, then one a second, per instance.
PACE_PER_SECOND = 1.0
PACE_BURST = 10
MAX_MARK_READ_IDS = 100


class Conversation:
    def __init__(
        self,
        dispatcher: Dispatcher,
        targets: Targets,
        inbound: InboundRepository,
        engines: Engines,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dispatcher = dispatcher
        self._targets = targets
        self._inbound = inbound
        self._engines = engines
        self._clock = clock
        self._read_pace = Pacer(clock, PACE_PER_SECOND, PACE_BURST)
        self._presence_pace = Pacer(clock, PACE_PER_SECOND, PACE_BURST)

    async def quoting(self, record: MessageRecord, reply_to: str) -> MessageRecord:
        """`record` quoting `reply_to`, a message of the same chat."""
        target = await self._targets.find(record.tenant, record.instance_id, reply_to)
        if target.ref.chat_jid != record.recipient_jid:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "reply_to",
                        f"is a message of another chat ({target.ref.chat_jid}); "
                        "a reply goes to the chat of the message it quotes",
                    )
                ]
            )
        return record.but(content={**record.content, "quote": dataclasses.asdict(target.ref)})

    async def react(
        self, tenant: str, instance_id: str, message_id: str, emoji: str, idempotency_key: str
    ) -> tuple[MessageRecord, bool]:
        await self._dispatcher.require_instance(tenant, instance_id)
        target = await self._targets.find(tenant, instance_id, message_id)
        return await self._queue(
            tenant, instance_id, target, "reaction", message_id, idempotency_key, emoji=emoji
        )

    async def edit(
        self, tenant: str, instance_id: str, message_id: str, text: str, idempotency_key: str
    ) -> tuple[MessageRecord, bool]:
        await self._dispatcher.require_instance(tenant, instance_id)
        target = await self._targets.own(tenant, instance_id, message_id, "edit")
        assert target.own is not None
        if target.own.kind != "text":
            raise MessageNotActionable(
                message_id, "not_text", f"only texts can be edited; it is a {target.own.kind}"
            )
        check_window(target, self._clock(), "edit")
        return await self._queue(
            tenant, instance_id, target, "edit", message_id, idempotency_key, edit_text=text
        )

    async def revoke(
        self, tenant: str, instance_id: str, message_id: str, idempotency_key: str
    ) -> tuple[MessageRecord, bool]:
        await self._dispatcher.require_instance(tenant, instance_id)
        target = await self._targets.own(tenant, instance_id, message_id, "revoke")
        check_window(target, self._clock(), "revoke")
        return await self._queue(tenant, instance_id, target, "revoke", message_id, idempotency_key)

    async def _queue(
        self,
        tenant: str,
        instance_id: str,
        target: Target,
        kind: str,
        given_id: str,
        idempotency_key: str,
        **fields: Any,
    ) -> tuple[MessageRecord, bool]:
        """Queues a reaction, edit or revoke in the chat of its target, as a message."""
        record = MessageRecord(
            tenant=tenant,
            instance_id=instance_id,
            recipient_jid=target.ref.chat_jid,
            kind=kind,
            content={"target": dataclasses.asdict(target.ref), "target_id": given_id, **fields},
            idempotency_key=idempotency_key or None,
        )
        return await self._dispatcher.accept(record)

    async def mark_read(
        self, tenant: str, instance_id: str, message_ids: list[str], up_to: str
    ) -> tuple[str, int]:
        """Sends read receipts; returns the chat and how many messages were marked."""
        await self._dispatcher.require_instance(tenant, instance_id)
        if up_to:
            last = await self._received(tenant, instance_id, up_to)
            unread = await self._inbound.unread_up_to(tenant, instance_id, last)
        else:
            unread = [await self._received(tenant, instance_id, i) for i in message_ids]
            chats = {m.chat_jid for m in unread}
            if len(chats) > 1:
                raise InvalidArgument(
                    [FieldViolation("message_ids", f"name messages of one chat, not {len(chats)}")]
                )
            last = unread[0]
        unread = [m for m in unread if not m.from_me]
        self._pace(self._read_pace, tenant, instance_id, "MarkRead")
        by_sender: dict[str, list[str]] = {}
        for message in unread:
            by_sender.setdefault(message.sender_jid, []).append(message.message_id)
        for sender, ids in by_sender.items():
            group = last.chat_jid.endswith("@g.us")
            await self._engines.mark_read(
                tenant, instance_id, last.chat_jid, sender if group else "", ids
            )
            await self._inbound.marked_read(tenant, instance_id, ids)
        return last.chat_jid, len(unread)

    async def presence(self, tenant: str, instance_id: str, chat_jid: str, presence: str) -> None:
        await self._dispatcher.require_instance(tenant, instance_id)
        self._pace(self._presence_pace, tenant, instance_id, "SendChatPresence")
        await self._engines.send_presence(tenant, instance_id, chat_jid, presence)

    async def set_presence(self, tenant: str, instance_id: str, available: bool) -> None:
        """The account's own presence (online or not)."""
        await self._dispatcher.require_instance(tenant, instance_id)
        self._pace(self._presence_pace, tenant, instance_id, "SetPresence")
        presence = "available" if available else "unavailable"
        await self._engines.send_presence(tenant, instance_id, "", presence)

    async def subscribe_presence(self, tenant: str, instance_id: str, contact_jid: str) -> None:
        """Asks for a contact's presence: presence_changed events follow."""
        await self._dispatcher.require_instance(tenant, instance_id)
        self._pace(self._presence_pace, tenant, instance_id, "SubscribePresence")
        await self._engines.send_presence(tenant, instance_id, contact_jid, "subscribe")

    async def _received(self, tenant: str, instance_id: str, message_id: str) -> ReceivedMessage:
        received = await self._inbound.received(tenant, instance_id, message_id)
        if received is None:
            raise MessageNotFound(message_id)
        return received

    @staticmethod
    def _pace(pacer: Pacer, tenant: str, instance_id: str, what: str) -> None:
        wait = pacer.take(f"{tenant}/{instance_id}")
        if wait > 0:
            raise RateLimited(what, wait)
