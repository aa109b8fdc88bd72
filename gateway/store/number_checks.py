"""Cached answers of number lookups, so the same number is not asked of WhatsApp again
within the TTL (Evolution API caches them for 7 days after bulk checks got accounts banned)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.schema import number_checks
from zapgate.sessions.engine import NumberCheck

DEFAULT_TTL_SECONDS = 7 * 86_400.0


class NumberCheckCache:
    def __init__(
        self,
        engine: AsyncEngine,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: MicrosClock = system_micros,
    ) -> None:
        self._engine = engine
        self._ttl_us = int(ttl_seconds * 1e6)
        self._clock = clock

    def _where(self, tenant: str, instance_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(number_checks.c.tenant == tenant, number_checks.c.instance_id == instance_id)

    async def fresh(
        self, tenant: str, instance_id: str, phones: list[str]
    ) -> dict[str, NumberCheck]:
        """The cached answers younger than the TTL, by phone."""
        statement = sa.select(
            number_checks.c.phone, number_checks.c.on_whatsapp, number_checks.c.jid
        ).where(
            self._where(tenant, instance_id),
            number_checks.c.phone.in_(phones),
            number_checks.c.checked_us > self._clock() - self._ttl_us,
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return {phone: NumberCheck(phone, bool(on), jid) for phone, on, jid in rows}

    async def save(self, tenant: str, instance_id: str, checks: list[NumberCheck]) -> None:
        if not checks:
            return
        now = self._clock()
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(number_checks).where(
                    self._where(tenant, instance_id),
                    number_checks.c.phone.in_([c.phone for c in checks]),
                )
            )
            await conn.execute(
                sa.insert(number_checks),
                [
                    {
                        "tenant": tenant,
                        "instance_id": instance_id,
                        "phone": c.phone,
                        "on_whatsapp": c.on_whatsapp,
                        "jid": c.jid,
                        "checked_us": now,
                    }
                    for c in checks
                ],
            )
