"""Messages the engines receive become durable events: each is committed to the event log,
with the location of its media (for DownloadMedia) and its sender (a known contact from now
on), before anyone sees it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.chats import ChatEntry
from zapgate.gateway.store.inbound import InboundRepository, MediaLocation, ReceivedMessage
from zapgate.gateway.store.messages import MessageRecord
from zapgate.sessions.events import MessageReceived, ReadElsewhere, poll_option_sha256
from zapgate.v1 import event_pb2 as pb
from zapgate.v1 import message_pb2

MEDIA_KINDS = {
    "image": pb.MEDIA_KIND_IMAGE,
    "video": pb.MEDIA_KIND_VIDEO,
    "audio": pb.MEDIA_KIND_AUDIO,
    "voice_note": pb.MEDIA_KIND_VOICE_NOTE,
    "document": pb.MEDIA_KIND_DOCUMENT,
    "sticker": pb.MEDIA_KIND_STICKER,
}


USER_SERVER = "@s.whatsapp.net"  # a phone-number JID; groups and LIDs have others


class Correspondence(Protocol):
    """Told of everyone who writes to an instance (the send dispatcher)."""

    def wrote_to_us(self, instance_key: str, jid: str) -> None: ...


class SentMessages(Protocol):
    """The instance's sent messages by WhatsApp id (its polls, whose votes arrive)."""

    async def by_whatsapp_id(
        self, tenant: str, instance_id: str, whatsapp_id: str
    ) -> MessageRecord | None: ...


class Inbox:
    def __init__(
        self,
        events: EventLog,
        inbound: InboundRepository,
        correspondence: Correspondence,
        sent: SentMessages,
    ) -> None:
        self._sent = sent
        self._events = events
        self._inbound = inbound
        self._correspondence = correspondence
        # (tenant, instance id, WhatsApp message id) -> set once its event is committed
        self._expected: dict[tuple[str, str, str], asyncio.Future[None]] = {}

    @contextmanager
    def expecting(
        self, tenant: str, instance_id: str, message_id: str
    ) -> Iterator[asyncio.Future[None]]:
        """A future that completes when this message's event has been committed (the
        simulator acknowledges an injected message only then)."""
        key = (tenant, instance_id, message_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expected[key] = future
        try:
            yield future
        finally:
            if self._expected.get(key) is future:
                del self._expected[key]

    async def received(self, tenant: str, instance_id: str, message: MessageReceived) -> None:
        media = None
        if message.media_ref:
            media = MediaLocation(
                message.media_ref,
                message.media_mime_type,
                message.media_file_name,
                message.media_size,
            )
        sender = correspondent(message)
        event = to_proto(message)
        if message.kind == "poll_vote":
            await self._name_votes(tenant, instance_id, event.poll_vote)
        await self._inbound.save(
            tenant,
            instance_id,
            message.message_id,
            media=media,
            correspondent=sender,
            event=self._events.row(tenant, instance_id, event),
            received=quotable(message),
            chat=chat_entry(message),
        )
        self._events.committed()
        if sender:
            self._correspondence.wrote_to_us(f"{tenant}/{instance_id}", sender)
        expected = self._expected.pop((tenant, instance_id, message.message_id), None)
        if expected is not None and not expected.done():
            expected.set_result(None)

    async def read_elsewhere(self, tenant: str, instance_id: str, read: ReadElsewhere) -> None:
        """The account read messages on another device: the chat store marks them read, in
        the transaction of their event."""

        def event(marked: int) -> dict[str, object]:
            return self._events.row(tenant, instance_id, read_elsewhere_event(read, marked))

        await self._inbound.read_elsewhere(tenant, instance_id, list(read.message_ids), event)
        self._events.committed()

    async def _name_votes(self, tenant: str, instance_id: str, vote: pb.PollVote) -> None:
        """Names the options of a vote in a poll the instance sent or received (a vote
        carries only their hashes)."""
        poll = await self._sent.by_whatsapp_id(tenant, instance_id, vote.poll_message_id)
        if poll is not None and poll.kind == "poll":
            options = list(poll.content.get("poll_options", ()))
            vote.poll_id = poll.id
        else:  # a poll someone posted in one of the instance's chats
            found = await self._inbound.poll_options(tenant, instance_id, vote.poll_message_id)
            if found is None:
                return
            options = found
        by_hash = {poll_option_sha256(o): o for o in options}
        vote.options_known = True
        # An option the poll does not have is left out (nobody can name it).
        vote.options.extend(by_hash[h] for h in vote.option_sha256 if h in by_hash)


def correspondent(message: MessageReceived) -> str:
    """The phone JID of who wrote to us in a direct chat ('' for our own messages, groups,
    and senders known only by their LID)."""
    if message.from_me or message.group_jid or not message.sender_jid.endswith(USER_SERVER):
        return ""
    return message.sender_jid


NOT_QUOTABLE = ("reaction", "edit", "revoke", "poll_vote", "ephemeral_setting", "unknown")
# Kinds no chat lists as a message: WhatsApp's apps show a timer change as a notice that
# counts as no unread message.
NOT_IN_CHATS = ("ephemeral_setting", "unknown")


def quotable(message: MessageReceived) -> ReceivedMessage | None:
    """What a reply to this message quotes and MarkRead names; None for what WhatsApp's apps
    cannot reply to (reactions, edits, deletions, messages of unknown kinds)."""
    if message.kind in NOT_QUOTABLE:
        return None
    text = message.text or message.location_name or message.contact_name
    return ReceivedMessage(
        message_id=message.message_id,
        chat_jid=message.chat_jid,
        sender_jid=message.sender_jid or message.sender_lid,
        from_me=message.from_me,
        kind=message.kind,
        text=text,
        sent_us=int(message.timestamp * 1e6),
        poll_options=message.poll_options if message.kind == "poll" else (),
    )


def chat_entry(message: MessageReceived) -> ChatEntry | None:
    """The message as its chat stores it (None for what no chat lists: unknown kinds, timer
    changes)."""
    if message.kind in NOT_IN_CHATS:
        return None
    return ChatEntry(
        message_id=message.message_id,
        chat_jid=message.chat_jid,
        sender_jid=message.sender_jid or message.sender_lid,
        from_me=message.from_me,
        kind=message.kind,
        sent_us=int(message.timestamp * 1e6),
        text=message.text or message.location_name or message.contact_name,
        push_name=message.push_name,
        media_mime_type=message.media_mime_type,
        media_file_name=message.media_file_name,
        target_message_id=message.target_message_id or message.reacted_message_id,
        emoji=message.reaction_emoji,
    )


def to_proto(message: MessageReceived) -> pb.MessageReceived:
    event = pb.MessageReceived(
        message_id=message.message_id,
        chat_jid=message.chat_jid,
        sender_jid=message.sender_jid,
        sender_lid=message.sender_lid,
        push_name=message.push_name,
        from_me=message.from_me,
        group_jid=message.group_jid,
    )
    event.sent_time.FromMicroseconds(int(message.timestamp * 1e6))
    if message.quoted_message_id:
        event.reply_to.CopyFrom(
            pb.ReplyContext(
                message_id=message.quoted_message_id, sender_jid=message.quoted_sender_jid
            )
        )
    kind = message.kind
    if kind == "text":
        event.text = message.text
    elif kind in MEDIA_KINDS:
        event.media.CopyFrom(
            pb.ReceivedMedia(
                kind=MEDIA_KINDS[kind],
                mime_type=message.media_mime_type,
                file_name=message.media_file_name,
                caption=message.text,
                size=message.media_size,
                sha256=message.media_sha256,
                seconds=message.media_seconds,
                view_once=message.view_once,
            )
        )
    elif kind == "location":
        event.location.CopyFrom(
            message_pb2.Location(
                latitude=message.latitude,
                longitude=message.longitude,
                name=message.location_name,
                address=message.location_address,
            )
        )
    elif kind == "contact":
        event.contact.CopyFrom(
            pb.ReceivedContact(display_name=message.contact_name, vcard=message.contact_vcard)
        )
    elif kind == "reaction":
        event.reaction.CopyFrom(
            pb.Reaction(message_id=message.reacted_message_id, emoji=message.reaction_emoji)
        )
    elif kind == "edit":
        event.edited.CopyFrom(
            pb.MessageEdited(message_id=message.target_message_id, text=message.text)
        )
    elif kind == "revoke":
        event.revoked.CopyFrom(pb.MessageRevoked(message_id=message.target_message_id))
    elif kind == "poll":
        event.poll.CopyFrom(
            message_pb2.Poll(
                question=message.text,
                options=message.poll_options,
                selectable_count=message.poll_selectable,
            )
        )
    elif kind == "poll_vote":
        event.poll_vote.CopyFrom(
            pb.PollVote(poll_message_id=message.target_message_id, option_sha256=message.poll_votes)
        )
    elif kind == "ephemeral_setting":
        event.ephemeral_setting.CopyFrom(
            pb.EphemeralSetting(expiration_seconds=message.ephemeral_seconds)
        )
    else:
        event.unsupported.SetInParent()
    return event


def read_elsewhere_event(read: ReadElsewhere, marked: int) -> pb.ReadElsewhere:
    event = pb.ReadElsewhere(chat_jid=read.chat, message_ids=read.message_ids, marked=marked)
    if read.timestamp:
        event.read_time.FromMicroseconds(int(read.timestamp * 1e6))
    return event
