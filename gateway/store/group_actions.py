"""The group creations and participant adds each instance made in the last day (the counts
behind ratelimit/groups.py's caps), so a restarted core keeps counting where it stopped."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.schema import group_actions

DAY_US = 86_400 * 1_000_000
KINDS = ("create", "add")


class GroupActionLog:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock

    def _where(self, tenant: str, instance_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(group_actions.c.tenant == tenant, group_actions.c.instance_id == instance_id)

    async def recent(self, tenant: str, instance_id: str) -> list[tuple[str, int, int]]:
        """(kind, at_us, count) of the last day, oldest first."""
        statement = (
            sa.select(group_actions.c.kind, group_actions.c.at_us, group_actions.c.count)
            .where(self._where(tenant, instance_id), group_actions.c.at_us > self._clock() - DAY_US)
            .order_by(group_actions.c.at_us, group_actions.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [(kind, int(at), int(count)) for kind, at, count in rows]

    async def record(self, tenant: str, instance_id: str, kind: str, count: int) -> None:
        """`count` actions of `kind` made now; rows past the day go."""
        if kind not in KINDS:
            raise ValueError(f"unknown group action {kind!r}")
        if count <= 0:
            return
        now = self._clock()
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(group_actions).where(
                    self._where(tenant, instance_id), group_actions.c.at_us <= now - DAY_US
                )
            )
            await conn.execute(
                sa.insert(group_actions).values(
                    tenant=tenant, instance_id=instance_id, kind=kind, at_us=now, count=count
                )
            )
