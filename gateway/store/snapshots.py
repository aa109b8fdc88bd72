"""Persistence of encrypted session snapshots: the newest one per instance."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.fencing import FenceToken, hold_fence
from zapgate.gateway.store.schema import instances, session_snapshots
from zapgate.sessions.group_commit import GroupCommit
from zapgate.sessions.vault import SealedSession


class StaleGeneration(Exception):
    """Another writer stored a newer snapshot first."""


class SnapshotRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock
        # Few at a time: each row holds a whole session store.
        self._reads = GroupCommit(self._read_many, max_batch=64)

    async def latest(self, tenant: str, instance_id: str) -> SealedSession | None:
        """Concurrent reads share one query (a restart restores every session at once)."""
        return await self._reads.submit((tenant, instance_id))

    async def _read_many(self, keys: list[tuple[str, str]]) -> list[SealedSession | None]:
        async with self._engine.connect() as conn:
            result = await conn.execute(_select_by_keys(), {"keys": list(dict.fromkeys(keys))})
            found = {(row["tenant"], row["id"]): _sealed(row) for row in result.mappings()}
        return [found.get(key) for key in keys]

    async def save(
        self,
        tenant: str,
        instance_id: str,
        sealed: SealedSession,
        fence: FenceToken | None = None,
    ) -> None:
        """Stores `sealed` as the newest snapshot; its generation must be the instance's
        current generation + 1 (both change in one transaction). With a `fence` (cluster
        mode), only under that lease (raises Fenced)."""
        async with self._engine.begin() as conn:
            await hold_fence(conn, tenant, instance_id, fence)
            bumped = await conn.execute(
                sa.update(instances)
                .where(
                    instances.c.tenant == tenant,
                    instances.c.id == instance_id,
                    instances.c.session_generation == sealed.generation - 1,
                )
                .values(session_generation=sealed.generation)
            )
            if not bumped.rowcount:
                raise StaleGeneration(f"{tenant}/{instance_id} generation {sealed.generation}")
            values = {
                "generation": sealed.generation,
                "key_id": sealed.key_id,
                "wrapped_key": sealed.wrapped_key,
                "ciphertext": sealed.ciphertext,
                "create_time_us": self._clock(),
            }
            updated = await conn.execute(
                sa.update(session_snapshots).where(_key(tenant, instance_id)).values(**values)
            )
            if not updated.rowcount:
                await conn.execute(
                    sa.insert(session_snapshots).values(tenant=tenant, id=instance_id, **values)
                )

    async def replace_wrapping(self, tenant: str, instance_id: str, sealed: SealedSession) -> bool:
        """Stores a re-wrapped data key, if the snapshot is still the same generation."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(session_snapshots)
                .where(
                    _key(tenant, instance_id), session_snapshots.c.generation == sealed.generation
                )
                .values(key_id=sealed.key_id, wrapped_key=sealed.wrapped_key)
            )
        return bool(result.rowcount)

    async def delete(self, tenant: str, instance_id: str) -> None:
        """Forgets the session for good (logout, delete): the generation starts over."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(session_snapshots).where(_key(tenant, instance_id)))
            await conn.execute(
                sa.update(instances)
                .where(instances.c.tenant == tenant, instances.c.id == instance_id)
                .values(session_generation=0)
            )

    async def all_keys(self) -> AsyncIterator[tuple[str, str, str]]:
        """(tenant, instance id, key id) of every snapshot."""
        query = sa.select(
            session_snapshots.c.tenant, session_snapshots.c.id, session_snapshots.c.key_id
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        for row in rows:
            yield row.tenant, row.id, row.key_id


def _key(tenant: str, instance_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(session_snapshots.c.tenant == tenant, session_snapshots.c.id == instance_id)


def _sealed(row: sa.RowMapping) -> SealedSession:
    return SealedSession(
        generation=row["generation"],
        key_id=row["key_id"],
        wrapped_key=bytes(row["wrapped_key"]),
        ciphertext=bytes(row["ciphertext"]),
    )


@functools.cache
def _select_by_keys() -> sa.Select[Any]:
    keys = sa.tuple_(session_snapshots.c.tenant, session_snapshots.c.id)
    return sa.select(session_snapshots).where(keys.in_(sa.bindparam("keys", expanding=True)))
