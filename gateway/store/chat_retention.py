"""Chat retention: each instance's stored messages older than its `retention_days` are
deleted in the background (a supervised loop), in short batches so SQLite's single writer
is never held long. A chat whose newest message went too is deleted with it; the others
keep their newest activity (it is younger than the cut). What the gateway keeps of each
received message apart from the chats (what replies quote and MarkRead names, where its
media is) goes at the same age: nothing of a message outlives its chat entry."""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.chat_settings import ChatSettingsRepository
from zapgate.gateway.store.schema import chat_messages, chats, received_media, received_messages

log = logging.getLogger(__name__)

DAY_US = 86_400 * 1_000_000
CHECK_SECONDS = 3600.0
BATCH = 1000


class ChatRetention:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: ChatSettingsRepository,
        clock: MicrosClock = system_micros,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._check_seconds = check_seconds

    async def run(self) -> None:
        """The background loop (supervised: a failed round is logged, the next one runs)."""
        while True:
            try:
                await self.enforce()
            except Exception:
                log.exception("chat retention failed")
            await asyncio.sleep(self._check_seconds)

    async def enforce(self) -> int:
        """One round over every instance with a retention; returns the messages deleted."""
        deleted = 0
        for tenant, instance_id, days in await self._settings.with_retention():
            deleted += await self.trim(tenant, instance_id, self._clock() - days * DAY_US)
        if deleted:
            log.info("chat retention deleted %d messages", deleted)
        return deleted

    async def trim(self, tenant: str, instance_id: str, older_than_us: int) -> int:
        """Deletes what is older than the cut; returns the chat messages deleted."""
        deleted = await self._delete_older(
            chat_messages, chat_messages.c.sent_us, tenant, instance_id, older_than_us
        )
        for table in (received_messages, received_media):
            await self._delete_older(table, table.c.received_us, tenant, instance_id, older_than_us)
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(chats).where(
                    chats.c.tenant == tenant,
                    chats.c.instance_id == instance_id,
                    chats.c.last_us < older_than_us,
                )
            )
        return deleted

    async def _delete_older(
        self,
        table: sa.Table,
        time: sa.Column[int],
        tenant: str,
        instance_id: str,
        older_than_us: int,
    ) -> int:
        """In batches of BATCH rows, one short transaction each, by the rows' own key."""
        key = table.c.seq if "seq" in table.c else table.c.message_id
        scope = (table.c.tenant == tenant, table.c.instance_id == instance_id)
        deleted = 0
        while True:
            old = sa.select(key).where(*scope, time < older_than_us).limit(BATCH)
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    sa.delete(table).where(*scope, key.in_(old.scalar_subquery()))
                )
            deleted += result.rowcount
            if result.rowcount < BATCH:
                return deleted
            await asyncio.sleep(0)
