"""The neonize engine's calls that talk to contacts: sends (neonize_send.py builds the
messages), typing, read marks, presence, call rejection, media downloads, contacts, number
checks and the LID map. Each step is one reader call (neonize_calls.py) under the gate."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from zapgate.sessions import (
    neonize_calls,
    neonize_contacts,
    neonize_events,
    neonize_inbound,
    neonize_lids,
    neonize_send,
)
from zapgate.sessions.engine import Contact, EventSink, NumberCheck, OutgoingContent, SendResult
from zapgate.sessions.events import InstanceKey
from zapgate.sessions.neonize_reader import CALL_THREADS, NeonizeReader
from zapgate.sessions.neonize_session import Session
from zapgate.sessions.presence_subscriptions import PresenceSubscriptions

# LID-map lookups per reader call when listing contacts: one call per contact row, so a long
# address book is read in slices and a start or stop waits for one slice, not for all.
ALTERNATES_PER_CALL = 200


class NeonizeMessaging(NeonizeReader):
    def __init__(self, sink: EventSink, *, call_threads: int = CALL_THREADS) -> None:
        super().__init__(sink, call_threads=call_threads)
        # whatsmeow forgets presence subscriptions with the connection: renewed on Connected.
        self._presence = PresenceSubscriptions()

    async def send(
        self, key: InstanceKey, recipient_jid: str, content: OutgoingContent
    ) -> SendResult:
        """Looks a phone-number recipient up (WhatsApp's number lookup: whatsmeow itself
        sends to a number that has no WhatsApp without any error, and the message is never
        delivered), uploads the media, builds the message and sends it. Each step is its own
        reader call: an upload does not hold the gate while the message is sent."""
        to = neonize_send.parse_recipient(recipient_jid)
        neonize_send.check_content(content)
        session = self._sending(key)
        to = await self._on_whatsapp(session, to)
        content = neonize_send.addressed(content, neonize_send.jid_text(to))
        uploaded = None
        if (upload := neonize_send.upload_of(content)) is not None:
            media, media_type = upload
            kind = content.kind
            uploaded = await self._read(
                session,
                lambda client: neonize_calls.upload(client, key, kind, media.data, media_type),
            )
        now = time.time()
        if content.kind == "poll":  # its secret comes from whatsmeow
            message = await self._read(
                session, lambda client: neonize_send.build_poll(client, content)
            )
        else:  # off the loop: building an image's preview decodes the whole image
            message = await self._in_thread(
                lambda: neonize_send.build_message(content, uploaded, now=now)
            )
        response = await self._read(
            session, lambda client: neonize_calls.deliver(client, key, to, message)
        )
        return SendResult(message_id=str(response.ID), timestamp=float(response.Timestamp))

    async def set_typing(self, key: InstanceKey, recipient_jid: str, typing: bool) -> None:
        """Also looks a phone-number recipient up, like `send` (and remembers it for the send
        that follows): "typing..." shows only in the chat of the number WhatsApp knows."""
        to = neonize_send.parse_recipient(recipient_jid)
        session = self._sending(key)
        to = await self._on_whatsapp(session, to)
        await self._read(session, lambda client: neonize_calls.show_typing(client, key, to, typing))

    async def mark_read(
        self, key: InstanceKey, chat_jid: str, sender_jid: str, message_ids: list[str]
    ) -> None:
        """whatsmeow's MarkRead: one read receipt for the messages (in a group, of one
        sender; in a direct chat the sender is the chat)."""
        chat = neonize_send.parse_recipient(chat_jid)
        sender = neonize_send.parse_recipient(sender_jid) if sender_jid else chat
        session = self._connected(key, "mark messages read")
        await self._read(
            session,
            partial(neonize_calls.mark_read, key=key, chat=chat, sender=sender, ids=message_ids),
        )

    async def send_presence(self, key: InstanceKey, chat_jid: str, presence: str) -> None:
        if presence in neonize_send.ACCOUNT_PRESENCES:
            session = self._connected(key, "set the account's presence")
            value = neonize_send.ACCOUNT_PRESENCES[presence]
            await self._read(session, partial(neonize_calls.account_presence, key=key, value=value))
            return
        if presence == neonize_send.SUBSCRIBE:
            contact = neonize_send.parse_recipient(chat_jid)
            session = self._connected(key, "subscribe to a presence")
            await self._read(
                session, partial(neonize_calls.subscribe_presence, key=key, contact=contact)
            )
            self._presence.remember(key, chat_jid)
            return
        to = neonize_send.parse_recipient(chat_jid)
        state, media = neonize_send.presence_state(presence)
        session = self._connected(key, "send a chat presence")
        to = await self._on_whatsapp(session, to)
        await self._read(
            session, partial(neonize_calls.presence, key=key, to=to, state=state, media=media)
        )

    async def _renew_presence(self, key: InstanceKey) -> None:
        """After a reconnect: subscribe again to the contacts subscribed to before."""
        await self._presence.renew(
            key, lambda contact: self.send_presence(key, contact, neonize_send.SUBSCRIBE)
        )

    async def reject_call(self, key: InstanceKey, caller_jid: str, call_id: str) -> None:
        """whatsmeow's RejectCall, naming the caller as the offer did (a number or a LID)."""
        caller = neonize_send.parse_recipient(caller_jid)
        session = self._connected(key, "reject a call")
        await self._read(
            session, partial(neonize_calls.reject_call, key=key, caller=caller, call_id=call_id)
        )

    async def download_media(self, key: InstanceKey, media_ref: str) -> bytes:
        """Downloads and decrypts received media (whatsmeow's DownloadAny). The download holds
        its call thread and a read hold on the gate until the whole file is in."""
        message = neonize_inbound.download_message(media_ref)
        session = self._connected(key, "download media")
        return await self._read(
            session, lambda client: neonize_calls.download(client, key, message)
        )

    async def contacts(self, key: InstanceKey) -> list[Contact]:
        """whatsmeow's contact store, with each row's other JID (phone number or LID) from
        its LID map."""
        session = self._connected(key, "list contacts")
        stored = await self._read(
            session, lambda client: neonize_calls.stored_contacts(client, key)
        )
        wanted = neonize_contacts.alternates_wanted(stored)
        alternates: dict[str, Any] = {}
        for start in range(0, len(wanted), ALTERNATES_PER_CALL):
            jids = wanted[start : start + ALTERNATES_PER_CALL]
            alternates.update(
                await self._read(session, partial(neonize_calls.alternates, jids=jids))
            )
        return neonize_contacts.to_contacts(stored, alternates)

    async def check_numbers(self, key: InstanceKey, phones: list[str]) -> list[NumberCheck]:
        """One IsOnWhatsApp query for all the numbers. The numbers found are remembered for
        `send`, which then needs no lookup of its own."""
        neonize_contacts.check_phones(phones)
        session = self._connected(key, "check numbers")
        if not phones:
            return []
        asked = list(dict.fromkeys(phones))
        answers = await self._read(
            session, lambda client: neonize_calls.check_numbers(client, key, asked)
        )
        checks = neonize_contacts.to_number_checks(phones, answers)
        for check in checks:
            known, _, server = check.jid.partition("@")
            if check.on_whatsapp and server == neonize_events.USER_SERVER:
                session.remember_user(check.phone[1:], known)
        return checks

    async def resolve_jids(self, key: InstanceKey, jids: list[str]) -> list[str]:
        """whatsmeow's LID map (GetLIDFromPN / GetPNFromLID), in chunks like `contacts`."""
        session = self._connected(key, "resolve JIDs")
        found: dict[str, Any] = {}
        asked = list(dict.fromkeys(jids))
        for start in range(0, len(asked), ALTERNATES_PER_CALL):
            chunk = [neonize_lids.to_neonize(j) for j in asked[start : start + ALTERNATES_PER_CALL]]
            found.update(await self._read(session, partial(neonize_calls.alternates, jids=chunk)))
        return neonize_lids.in_order(jids, found)

    async def _on_whatsapp(self, session: Session, to: Any) -> Any:
        """The recipient as WhatsApp knows it. WhatsApp may answer with another number than
        the one asked: Brazilian mobile numbers registered before the ninth digit was added
        live on without it, and a message to the other form is never delivered."""
        user = neonize_send.phone_user(to)
        if not user:
            return to  # a group or a LID: no number to look up
        known = session.known_users.get(user)
        if known is None:
            key = session.key
            known = await self._read(
                session, lambda client: neonize_calls.look_up(client, key, user)
            )
            session.remember_user(user, known)
        return neonize_send.jid(known, neonize_events.USER_SERVER)
