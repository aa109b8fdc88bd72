"""Where each received media file can be fetched from: the engine's reference, kept beside
the event that announced it, until DownloadMedia asks."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.schema import received_media


@dataclass(frozen=True)
class MediaLocation:
    media_ref: str
    mime_type: str
    file_name: str
    size: int


class ReceivedMediaRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock

    async def save(
        self, tenant: str, instance_id: str, message_id: str, media: MediaLocation
    ) -> None:
        """Remembers the media of a message; a redelivered message keeps its first row."""
        row = {
            "tenant": tenant,
            "instance_id": instance_id,
            "message_id": message_id,
            "media_ref": media.media_ref,
            "mime_type": media.mime_type,
            "file_name": media.file_name,
            "size": media.size,
            "received_us": self._clock(),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(received_media).values(row))
        except IntegrityError:
            pass

    async def get(self, tenant: str, instance_id: str, message_id: str) -> MediaLocation | None:
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
