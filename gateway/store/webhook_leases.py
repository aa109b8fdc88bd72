"""Webhook leases on the webhooks' own rows (PostgreSQL, cluster mode only; see
gateway/cluster/webhook_leases.py). Times are the database's clock. Releasing a lease only
expires it, and every acquisition raises its epoch, so an epoch is never handed out twice
for one webhook; the delivery loop's writes check it (store/webhooks.py `_delivering`)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.store.fencing import database_now_us
from zapgate.gateway.store.schema import webhooks
from zapgate.gateway.store.webhooks import RUNNING

WebhookKey = tuple[str, str]  # (tenant, webhook id)


@dataclass(frozen=True)
class Renewed:
    """A lease a renewal kept, with what the loop must know of the webhook now."""

    epoch: int
    running: bool  # ACTIVE or RETRYING: it should be delivered
    update_time_us: int  # a client changed it when this moves: its loop starts over


class WebhookLeaseRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def renew(
        self, node_id: str, keys: list[WebhookKey], ttl_seconds: float
    ) -> dict[WebhookKey, Renewed]:
        """Extends the named unexpired leases of this node; returns those it still holds."""
        if not keys:
            return {}
        now = database_now_us()
        statement = (
            sa.update(webhooks)
            .where(
                webhooks.c.owner_node == node_id,
                webhooks.c.lease_expire_us > now,
                sa.tuple_(webhooks.c.tenant, webhooks.c.id).in_(keys),
            )
            .values(lease_expire_us=now + _micros(ttl_seconds))
            .returning(
                webhooks.c.tenant,
                webhooks.c.id,
                webhooks.c.lease_epoch,
                webhooks.c.status,
                webhooks.c.update_time_us,
            )
        )
        async with self._engine.begin() as conn:
            rows = (await conn.execute(statement)).all()
        return {
            (row.tenant, row.id): Renewed(
                int(row.lease_epoch), int(row.status) in RUNNING, int(row.update_time_us)
            )
            for row in rows
        }

    async def acquire(
        self, key: WebhookKey, node_id: str, ttl_seconds: float
    ) -> tuple[int, int] | None:
        """Takes the lease of a running webhook nobody holds: (new epoch, update time), or
        None when another node holds it (or it stopped, or is gone)."""
        now = database_now_us()
        statement = (
            sa.update(webhooks)
            .where(
                webhooks.c.tenant == key[0],
                webhooks.c.id == key[1],
                webhooks.c.status.in_(RUNNING),
                webhooks.c.lease_expire_us <= now,
            )
            .values(
                owner_node=node_id,
                lease_epoch=webhooks.c.lease_epoch + 1,
                lease_expire_us=now + _micros(ttl_seconds),
            )
            .returning(webhooks.c.lease_epoch, webhooks.c.update_time_us)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else (int(row.lease_epoch), int(row.update_time_us))

    async def release(
        self, node_id: str, key: WebhookKey | None = None, epoch: int | None = None
    ) -> None:
        """Expires this node's webhook leases (all, or one at the epoch it held: never a
        later lease of the same node): others take them at their next look. Call only once
        their delivery loops have ended here."""
        condition = webhooks.c.owner_node == node_id
        if key is not None:
            condition &= sa.and_(
                webhooks.c.tenant == key[0],
                webhooks.c.id == key[1],
                webhooks.c.lease_epoch == epoch,
            )
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(webhooks)
                .where(condition, webhooks.c.lease_expire_us > 0)
                .values(lease_expire_us=0)
            )

    async def unheld(self) -> tuple[int, list[WebhookKey]]:
        """How many webhooks run, and those of them no node holds (never held, expired)."""
        running = webhooks.c.status.in_(RUNNING)
        async with self._engine.connect() as conn:
            total = int(await conn.scalar(sa.select(sa.func.count()).where(running)) or 0)
            rows = await conn.execute(
                sa.select(webhooks.c.tenant, webhooks.c.id).where(
                    running, webhooks.c.lease_expire_us <= database_now_us()
                )
            )
            return total, [(row.tenant, row.id) for row in rows]


def _micros(seconds: float) -> int:
    return int(seconds * 1_000_000)
