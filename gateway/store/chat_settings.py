"""Per-instance chat settings: how much of the history WhatsApp sends after pairing is
imported, and how long stored chats are kept. 0 means no limit."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.store.schema import chat_settings


@dataclass(frozen=True)
class ChatSettings:
    history_days: int = 90
    history_messages_per_chat: int = 1000
    retention_days: int = 0  # keep


DEFAULT_SETTINGS = ChatSettings()


class ChatSettingsRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant: str, instance_id: str) -> ChatSettings:
        query = sa.select(
            chat_settings.c.history_days,
            chat_settings.c.history_messages_per_chat,
            chat_settings.c.retention_days,
        ).where(chat_settings.c.tenant == tenant, chat_settings.c.instance_id == instance_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return DEFAULT_SETTINGS if row is None else ChatSettings(*row)

    async def put(self, tenant: str, instance_id: str, settings: ChatSettings) -> None:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        values = asdict(settings)
        statement = dialect.insert(chat_settings).values(
            tenant=tenant, instance_id=instance_id, **values
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[chat_settings.c.tenant, chat_settings.c.instance_id],
                    set_=values,
                )
            )

    async def with_retention(self) -> list[tuple[str, str, int]]:
        """(tenant, instance id, days) of every instance whose chats expire."""
        query = sa.select(
            chat_settings.c.tenant, chat_settings.c.instance_id, chat_settings.c.retention_days
        ).where(chat_settings.c.retention_days > 0)
        async with self._engine.connect() as conn:
            return [(row[0], row[1], int(row[2])) for row in await conn.execute(query)]
