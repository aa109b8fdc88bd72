"""What inbound messages leave behind besides their event, committed in the same
transaction as it: where each received media file can be fetched from (the engine's
reference, until DownloadMedia asks), and who wrote to the instance (its correspondents:
replying to them is not a cold message, so they are no new contacts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.chats import ChatEntry, marked_read_in, record_in
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.schema import correspondents, received_media, received_messages


@dataclass(frozen=True)
class ReceivedMessage:
    """What a reply quotes and MarkRead names of a received message."""

    message_id: str  # WhatsApp's
    chat_jid: str
    sender_jid: str
    from_me: bool
    kind: str
    text: str
    sent_us: int
    read_us: int = 0  # when the instance marked it read (0: not yet)
    # When the gateway stored it: WhatsApp's times have whole seconds, this orders a chat's
    # messages of one second.
    received_us: int = 0
    # A poll's options (its votes name them by hash); empty for every other kind.
    poll_options: tuple[str, ...] = ()


# How many messages one MarkRead "up to" names at most (the newest unread ones).
MAX_MARK_READ = 500


@dataclass(frozen=True)
class MediaLocation:
    media_ref: str
    mime_type: str
    file_name: str
    size: int


class InboundRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock

    async def save(
        self,
        tenant: str,
        instance_id: str,
        message_id: str,
        *,
        media: MediaLocation | None,
        correspondent: str,
        event: dict[str, Any],
        received: ReceivedMessage | None = None,
        chat: ChatEntry | None = None,
    ) -> None:
        """Commits a received message's event with its media location, its sender (empty:
        none to remember), what a reply to it quotes (None: nothing to quote, e.g. a
        reaction) and its place in its chat (store/chats.py). A redelivered message keeps
        its first rows."""
        now = self._clock()
        async with self._engine.begin() as conn:
            if chat is not None:
                await record_in(conn, tenant, instance_id, chat, now)
            if received is not None:
                row = {
                    "tenant": tenant,
                    "instance_id": instance_id,
                    **received.__dict__,
                    "received_us": now,
                    "poll_options": list(received.poll_options) or None,
                }
                await _insert_new(conn, received_messages, row)
            if media is not None:
                row = {
                    "tenant": tenant,
                    "instance_id": instance_id,
                    "message_id": message_id,
                    "media_ref": media.media_ref,
                    "mime_type": media.mime_type,
                    "file_name": media.file_name,
                    "size": media.size,
                    "received_us": now,
                }
                await _insert_new(conn, received_media, row)
            if correspondent:
                row = {"tenant": tenant, "instance_id": instance_id, "jid": correspondent}
                await _insert_new(conn, correspondents, {**row, "first_us": now})
            await append_events(conn, [event])

    async def poll_options(
        self, tenant: str, instance_id: str, message_id: str
    ) -> list[str] | None:
        """The options of a poll the instance received; None when it received no such poll."""
        query = sa.select(received_messages.c.poll_options).where(
            received_messages.c.tenant == tenant,
            received_messages.c.instance_id == instance_id,
            received_messages.c.message_id == message_id,
            received_messages.c.kind == "poll",
        )
        async with self._engine.connect() as conn:
            options = (await conn.execute(query)).scalar()
        return None if options is None else [str(option) for option in options]

    async def media(self, tenant: str, instance_id: str, message_id: str) -> MediaLocation | None:
        query = sa.select(
            received_media.c.media_ref,
            received_media.c.mime_type,
            received_media.c.file_name,
            received_media.c.size,
        ).where(
            received_media.c.tenant == tenant,
            received_media.c.instance_id == instance_id,
            received_media.c.message_id == message_id,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else MediaLocation(*row)

    async def received(
        self, tenant: str, instance_id: str, message_id: str
    ) -> ReceivedMessage | None:
        """A message the instance received, by WhatsApp's id (scoped: an id is unique only
        within its account)."""
        query = sa.select(*_RECEIVED).where(
            received_messages.c.tenant == tenant,
            received_messages.c.instance_id == instance_id,
            received_messages.c.message_id == message_id,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else ReceivedMessage(*row)

    async def unread_up_to(
        self, tenant: str, instance_id: str, last: ReceivedMessage
    ) -> list[ReceivedMessage]:
        """The messages others wrote in `last`'s chat up to it, not marked read yet, newest
        first (at most MAX_MARK_READ)."""
        query = (
            sa.select(*_RECEIVED)
            .where(
                received_messages.c.tenant == tenant,
                received_messages.c.instance_id == instance_id,
                received_messages.c.chat_jid == last.chat_jid,
                sa.or_(
                    received_messages.c.sent_us < last.sent_us,
                    sa.and_(
                        received_messages.c.sent_us == last.sent_us,
                        received_messages.c.received_us <= last.received_us,
                    ),
                ),
                received_messages.c.read_us == 0,
                received_messages.c.from_me == sa.false(),
            )
            .order_by(received_messages.c.sent_us.desc(), received_messages.c.received_us.desc())
            .limit(MAX_MARK_READ)
        )
        async with self._engine.connect() as conn:
            return [ReceivedMessage(*row) for row in await conn.execute(query)]

    async def marked_read(self, tenant: str, instance_id: str, message_ids: list[str]) -> None:
        """Remembers the read marks sent, and lowers their chats' unread counts."""
        async with self._engine.begin() as conn:
            await self._mark_read_in(conn, tenant, instance_id, message_ids)

    async def read_elsewhere(
        self,
        tenant: str,
        instance_id: str,
        message_ids: list[str],
        event: Callable[[int], dict[str, Any]],
    ) -> None:
        """Messages the account read on another device: marked read like MarkRead's, and
        committed with their event, `event(how many were unread)`."""
        async with self._engine.begin() as conn:
            marked = await self._mark_read_in(conn, tenant, instance_id, message_ids)
            await append_events(conn, [event(marked)])

    async def _mark_read_in(
        self, conn: AsyncConnection, tenant: str, instance_id: str, message_ids: list[str]
    ) -> int:
        now = self._clock()
        marked = await marked_read_in(conn, tenant, instance_id, message_ids, now)
        await conn.execute(
            sa.update(received_messages)
            .where(
                received_messages.c.tenant == tenant,
                received_messages.c.instance_id == instance_id,
                received_messages.c.message_id.in_(message_ids),
            )
            .values(read_us=now)
        )
        return marked

    async def correspondents(self, tenant: str, instance_id: str) -> set[str]:
        """Everyone who ever wrote to the instance in a direct chat."""
        query = sa.select(correspondents.c.jid).where(
            correspondents.c.tenant == tenant, correspondents.c.instance_id == instance_id
        )
        async with self._engine.connect() as conn:
            return {row[0] for row in await conn.execute(query)}


async def _insert_new(conn: AsyncConnection, table: sa.Table, row: dict[str, Any]) -> None:
    """Inserts `row` unless its key is taken (then the row already there stays)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(dialect.insert(table).values(row).on_conflict_do_nothing())


_RECEIVED = [
    received_messages.c.message_id,
    received_messages.c.chat_jid,
    received_messages.c.sender_jid,
    received_messages.c.from_me,
    received_messages.c.kind,
    received_messages.c.text,
    received_messages.c.sent_us,
    received_messages.c.read_us,
    received_messages.c.received_us,
]
