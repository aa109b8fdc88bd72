"""History syncs the engines report (the chats and messages WhatsApp sends a newly linked
device) imported into the per-chat store, within the instance's chat settings (how many
days back, how many messages per chat), with a HistorySyncProgress event per blob and a
HistorySyncCompleted after the last.

A blob can hold tens of thousands of messages: it is written in batches of BATCH_SIZE, one
short transaction each, yielding to the event loop between them, so neither the loop nor
SQLite's single writer is held for the whole blob (the contact sync does the same). The
blob's event commits with its last batch. Messages are keyed by WhatsApp's id per instance,
so a repeated sync stores nothing twice."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.chat_history import (
    ChatFacts,
    MediaRow,
    Stored,
    describe_chats_in,
    insert_history_in,
    remember_media_in,
    touch_newest_in,
)
from zapgate.gateway.store.chat_settings import ChatSettings, ChatSettingsRepository
from zapgate.gateway.store.chats import ChatEntry
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.schema import chat_messages
from zapgate.sessions.events import HistoryMessage, HistorySynced
from zapgate.v1 import event_pb2 as pb

log = logging.getLogger(__name__)

BATCH_SIZE = 500
DAY_US = 86_400 * 1_000_000


@dataclass
class _Totals:
    chats: int = 0
    imported: int = 0
    skipped: int = 0


class HistoryImport:
    def __init__(
        self,
        engine: AsyncEngine,
        events: EventLog,
        settings: ChatSettingsRepository,
        clock: MicrosClock = system_micros,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._engine = engine
        self._events = events
        self._settings = settings
        self._clock = clock
        self._batch_size = batch_size
        # One blob at a time per instance (per-chat caps count what earlier blobs stored).
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._totals: dict[str, _Totals] = {}

    async def received(self, tenant: str, instance_id: str, synced: HistorySynced) -> None:
        key = f"{tenant}/{instance_id}"
        async with self._locks[key]:
            await self._import(tenant, instance_id, synced, self._totals.setdefault(key, _Totals()))
            if synced.final:
                self._totals.pop(key, None)

    async def _import(
        self, tenant: str, instance_id: str, synced: HistorySynced, totals: _Totals
    ) -> None:
        settings = await self._settings.get(tenant, instance_id)
        now = self._clock()
        wanted = await self._within(tenant, instance_id, synced.messages, settings, now)
        facts = [
            ChatFacts(c.jid, c.name, c.unread, c.archived, c.pinned, int(c.muted_until * 1_000_000))
            for c in synced.chats
        ]
        imported = 0
        newest: dict[str, Stored] = {}
        newest_entries: dict[str, ChatEntry] = {}  # by WhatsApp id
        batches = [
            wanted[start : start + self._batch_size]
            for start in range(0, len(wanted), self._batch_size)
        ] or [[]]
        for number, messages in enumerate(batches):
            last = number == len(batches) - 1
            # Rows are built batch by batch: building them all first would hold the loop.
            batch = [_entry(m) for m in messages]
            media = [_media(m) for m in messages if m.media_ref]
            async with self._engine.begin() as conn:
                if number == 0:
                    await describe_chats_in(conn, tenant, instance_id, facts)
                count, inserted = await insert_history_in(conn, tenant, instance_id, batch, now)
                await remember_media_in(conn, tenant, instance_id, media, now)
                imported += count
                by_id = {entry.message_id: entry for entry in batch}
                for chat_jid, stored in inserted.items():
                    if stored[:2] > newest.get(chat_jid, (-1, -1, ""))[:2]:
                        newest[chat_jid] = stored
                        newest_entries[stored[2]] = by_id[stored[2]]
                if last:
                    # The chats' newest activity moves once per blob, with its event.
                    await touch_newest_in(conn, tenant, instance_id, newest, newest_entries)
                    totals.chats += len(facts)
                    totals.imported += imported
                    totals.skipped += len(synced.messages) - imported
                    await append_events(
                        conn,
                        self._event_rows(tenant, instance_id, synced, totals, len(facts), imported),
                    )
            if last:
                self._events.committed()
            else:
                await asyncio.sleep(0)  # let the loop serve others between batches
        log.info(
            "history of %s/%s: blob %d (%d%%): %d of %d messages imported",
            tenant,
            instance_id,
            synced.chunk_order,
            synced.progress,
            imported,
            len(synced.messages),
        )

    def _event_rows(
        self,
        tenant: str,
        instance_id: str,
        synced: HistorySynced,
        totals: _Totals,
        chats: int,
        imported: int,
    ) -> list[dict[str, object]]:
        progress = pb.HistorySyncProgress(
            chunk_order=synced.chunk_order,
            progress_percent=synced.progress,
            chats=chats,
            messages_imported=imported,
            messages_skipped=len(synced.messages) - imported,
        )
        rows = [self._events.row(tenant, instance_id, progress)]
        if synced.final:
            completed = pb.HistorySyncCompleted(
                chats=totals.chats,
                messages_imported=totals.imported,
                messages_skipped=totals.skipped,
            )
            rows.append(self._events.row(tenant, instance_id, completed))
        return rows

    async def _within(
        self,
        tenant: str,
        instance_id: str,
        messages: tuple[HistoryMessage, ...],
        settings: ChatSettings,
        now: int,
    ) -> list[HistoryMessage]:
        """The messages the settings let in: not older than history_days, and per chat the
        newest ones up to history_messages_per_chat (counting those stored already)."""
        oldest = now - settings.history_days * DAY_US if settings.history_days else None
        by_chat: defaultdict[str, list[HistoryMessage]] = defaultdict(list)
        for message in messages:
            if oldest is None or message.timestamp * 1_000_000 >= oldest:
                by_chat[message.chat_jid].append(message)
        cap = settings.history_messages_per_chat
        if not cap:
            return [m for chat in by_chat.values() for m in chat]
        stored = await self._stored_from_history(tenant, instance_id, list(by_chat))
        wanted: list[HistoryMessage] = []
        for chat_jid, chat in by_chat.items():
            room = max(0, cap - stored.get(chat_jid, 0))
            chat.sort(key=lambda m: m.timestamp, reverse=True)
            wanted += chat[:room]
        return wanted

    async def _stored_from_history(
        self, tenant: str, instance_id: str, chat_jids: list[str]
    ) -> dict[str, int]:
        if not chat_jids:
            return {}
        query = (
            sa.select(chat_messages.c.chat_jid, sa.func.count())
            .where(
                chat_messages.c.tenant == tenant,
                chat_messages.c.instance_id == instance_id,
                chat_messages.c.chat_jid.in_(chat_jids),
                chat_messages.c.from_history == sa.true(),
            )
            .group_by(chat_messages.c.chat_jid)
        )
        async with self._engine.connect() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}


def _media(message: HistoryMessage) -> MediaRow:
    return MediaRow(
        message.message_id,
        message.media_ref,
        message.media_mime_type,
        message.media_file_name,
        message.media_size,
    )


def _entry(message: HistoryMessage) -> ChatEntry:
    return ChatEntry(
        message_id=message.message_id,
        chat_jid=message.chat_jid,
        sender_jid=message.sender_jid,
        from_me=message.from_me,
        kind=message.kind,
        sent_us=int(message.timestamp * 1_000_000),
        text=message.text,
        push_name=message.push_name,
        media_mime_type=message.media_mime_type,
        media_file_name=message.media_file_name,
        from_history=True,
    )
