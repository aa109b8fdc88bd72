"""What inbound messages leave behind besides their event, committed in the same
transaction as it: where each received media file can be fetched from (the engine's
reference, until DownloadMedia asks), and who wrote to the instance (its correspondents:
replying to them is not a cold message, so they are no new contacts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.schema import correspondents, received_media


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
    ) -> None:
        """Commits a received message's event with its media location and its sender
        (empty: none to remember). A redelivered message keeps its first media row."""
        now = self._clock()
        async with self._engine.begin() as conn:
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
