"""Nodes and instance leases (PostgreSQL only; see gateway/cluster and store/fencing.py).

Every time here is the database's clock, so the nodes' clocks never have to agree. A lease
row outlives its owner: releasing one only expires it, and every acquisition raises its
epoch, so an epoch is never handed out twice for one instance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.store import queue_notices
from zapgate.gateway.store.conflicts import retry_conflicts
from zapgate.gateway.store.fencing import database_now_us
from zapgate.gateway.store.handover_notices import notice
from zapgate.gateway.store.schema import instance_leases, instances, nodes

InstanceKey = tuple[str, str]  # (tenant, instance id)


@dataclass(frozen=True)
class NodeLoad:
    node_id: str
    address: str
    owned: int  # unexpired leases, and released ones reserved for it
    max_instances: int


@dataclass(frozen=True)
class Owner:
    node_id: str
    address: str
    epoch: int


class LeaseRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def register(self, node_id: str, address: str, max_instances: int) -> None:
        """Announces this node (again, after a restart with the same id)."""
        now = database_now_us()
        row = {
            "id": node_id,
            "address": address,
            "max_instances": max_instances,
            "start_time_us": now,
            "heartbeat_us": now,
        }
        statement = insert(nodes).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=[nodes.c.id],
            set_={name: statement.excluded[name] for name in row if name != "id"},
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    async def renew(
        self, node_id: str, keys: Iterable[InstanceKey], ttl_seconds: float
    ) -> dict[InstanceKey, int]:
        """Heartbeats, and extends the named unexpired leases of this node by the TTL.
        Returns those it still holds with their epochs; an expired one is not renewed (the
        node must assume another took it). Only the named ones: a lease the node dropped
        must not be kept alive by a node that no longer runs the instance."""
        now = database_now_us()
        wanted = list(keys)

        async def transaction() -> dict[InstanceKey, int]:
            async with self._engine.begin() as conn:
                await conn.execute(
                    sa.update(nodes).where(nodes.c.id == node_id).values(heartbeat_us=now)
                )
                if not wanted:
                    return {}
                # Only expire_us, never a key column: PostgreSQL then locks the rows FOR NO
                # KEY UPDATE, which the fenced writes' KEY SHARE locks do not hold up
                # (fencing.py).
                renewed = await conn.execute(
                    sa.update(instance_leases)
                    .where(
                        instance_leases.c.owner_node == node_id,
                        instance_leases.c.expire_us > now,
                        _among(wanted),
                    )
                    .values(expire_us=now + _micros(ttl_seconds))
                    .returning(
                        instance_leases.c.tenant,
                        instance_leases.c.instance_id,
                        instance_leases.c.epoch,
                    )
                )
                return {(row.tenant, row.instance_id): int(row.epoch) for row in renewed}

        return await retry_conflicts(transaction)  # idempotent: safe to run again

    async def acquire(
        self, tenant: str, instance_id: str, node_id: str, ttl_seconds: float
    ) -> int | None:
        """Takes the instance's lease if nobody holds it (never held, expired, released) and
        it is not reserved for another node: returns the new epoch (one more than the last),
        or None when a node holds it or it is reserved for another."""
        now = database_now_us()
        row = insert(instance_leases).values(
            tenant=tenant,
            instance_id=instance_id,
            owner_node=node_id,
            epoch=1,
            expire_us=now + _micros(ttl_seconds),
        )
        statement = row.on_conflict_do_update(
            index_elements=[instance_leases.c.tenant, instance_leases.c.instance_id],
            set_={
                "owner_node": row.excluded.owner_node,
                "epoch": instance_leases.c.epoch + 1,
                "expire_us": row.excluded.expire_us,
                "reserved_for": None,
                "reserved_until_us": 0,
            },
            where=sa.and_(instance_leases.c.expire_us <= now, _open_to(node_id, now)),
        ).returning(instance_leases.c.epoch)
        async with self._engine.begin() as conn:
            await conn.execute(_lock_for_acquisition(tenant, instance_id))
            epoch = (await conn.execute(statement)).scalar()
        return None if epoch is None else int(epoch)

    async def release(self, node_id: str, keys: Iterable[InstanceKey] | None = None) -> None:
        """Expires this node's leases (all, or the named ones) so others take them now."""
        condition = instance_leases.c.owner_node == node_id
        if keys is not None:
            wanted = list(keys)
            if not wanted:
                return
            condition &= _among(wanted)
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(instance_leases).where(condition).values(expire_us=0))

    async def hand_over(
        self, key: InstanceKey, node_id: str, epoch: int, target: str, reserve_seconds: float
    ) -> bool:
        """Releases a lease this node holds at `epoch` and reserves it for `target`, which
        claims it at once (it is notified) while no other node may. False when the lease
        was not this node's any more, or had expired (nothing changed, nobody told)."""
        now = database_now_us()
        statement = (
            sa.update(instance_leases)
            .where(
                instance_leases.c.tenant == key[0],
                instance_leases.c.instance_id == key[1],
                instance_leases.c.owner_node == node_id,
                instance_leases.c.epoch == epoch,
                instance_leases.c.expire_us > now,
            )
            .values(
                expire_us=0,
                reserved_for=target,
                reserved_until_us=now + _micros(reserve_seconds),
            )
        )
        async with self._engine.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return False
            await conn.execute(notice(target))
            return True

    async def reserve(self, key: InstanceKey, target: str, reserve_seconds: float) -> bool:
        """Reserves a lease nobody holds (nor has reserved) for `target`: a new instance
        placed on the least loaded node. False when a node holds it or it is reserved."""
        now = database_now_us()
        until = now + _micros(reserve_seconds)
        row = insert(instance_leases).values(
            tenant=key[0],
            instance_id=key[1],
            owner_node="",  # never held: acquiring it gives epoch 1
            epoch=0,
            expire_us=0,
            reserved_for=target,
            reserved_until_us=until,
        )
        statement = row.on_conflict_do_update(
            index_elements=[instance_leases.c.tenant, instance_leases.c.instance_id],
            set_={"reserved_for": target, "reserved_until_us": until},
            where=sa.and_(instance_leases.c.expire_us <= now, _open_to(target, now)),
        ).returning(instance_leases.c.epoch)
        async with self._engine.begin() as conn:
            if (await conn.execute(statement)).first() is None:
                return False
            await conn.execute(notice(target))
            return True

    async def tell_queued(self, node_id: str, key: InstanceKey) -> None:
        """Asks the instance's owner to schedule a message committed by another node
        (store/queue_notices.py)."""
        async with self._engine.begin() as conn:
            await conn.execute(queue_notices.notice(node_id, key))

    async def end_stalled_sessions(self, seconds: float) -> int:
        """Ends the database sessions whose client stopped in the middle of a statement for
        `seconds` (a node frozen or cut off between the two messages asyncpg sends per new
        statement, Parse then Bind): PostgreSQL's idle timeout does not end them, since the
        session is active, and they keep their locks (a lease row, the event-order lock)
        for as long as the node stays frozen. Returns how many it ended."""
        query = sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state = 'active' AND wait_event = 'ClientRead' "
            "AND state_change < now() - make_interval(secs => :seconds)"
        )
        async with self._engine.begin() as conn:
            return int(await conn.scalar(query, {"seconds": seconds}) or 0)

    async def retire(self, node_id: str) -> None:
        """The node is draining: it takes nothing more (its maximum becomes 0), so no node
        hands it instances and no placement picks it."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(nodes).where(nodes.c.id == node_id).values(max_instances=0)
            )

    async def leave(self, node_id: str) -> None:
        """The node stops: its leases expire now and it is no longer counted."""
        await self.release(node_id)
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(nodes).where(nodes.c.id == node_id))

    async def claimable(self, limit: int, expired_for_seconds: float = 0.0) -> list[InstanceKey]:
        """Instances that should be connected and that no node holds: never leased, or
        their lease expired (its node died, paused, or left). With `expired_for_seconds`:
        only those whose lease expired at least that long ago."""
        lease = instance_leases
        expired_before = database_now_us() - int(expired_for_seconds * 1_000_000)
        never_leased = lease.c.expire_us.is_(None) if expired_for_seconds <= 0 else sa.false()
        query = (
            sa.select(instances.c.tenant, instances.c.id)
            .select_from(
                instances.outerjoin(
                    lease,
                    sa.and_(
                        lease.c.tenant == instances.c.tenant, lease.c.instance_id == instances.c.id
                    ),
                )
            )
            .where(
                instances.c.want_connected.is_(True),
                sa.or_(
                    never_leased,
                    sa.and_(
                        lease.c.expire_us <= expired_before,
                        lease.c.reserved_until_us <= database_now_us(),
                    ),
                ),
            )
            .order_by(instances.c.tenant, instances.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [(row.tenant, row.id) for row in await conn.execute(query)]

    async def reserved_for(self, node_id: str, limit: int) -> list[InstanceKey]:
        """Released leases reserved for this node (handed over, or placed here) that it
        should claim now: their instance wants a connection, or the reservation is a fresh
        placement that a Connect call here will claim."""
        now = database_now_us()
        lease = instance_leases
        query = (
            sa.select(lease.c.tenant, lease.c.instance_id)
            .select_from(
                lease.join(
                    instances,
                    sa.and_(
                        lease.c.tenant == instances.c.tenant, lease.c.instance_id == instances.c.id
                    ),
                )
            )
            .where(
                lease.c.reserved_for == node_id,
                lease.c.reserved_until_us > now,
                lease.c.expire_us <= now,
                instances.c.want_connected.is_(True),
            )
            .order_by(lease.c.tenant, lease.c.instance_id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [(row.tenant, row.instance_id) for row in await conn.execute(query)]

    async def loads(self, heartbeat_within_seconds: float) -> list[NodeLoad]:
        """Nodes that heartbeated lately, each with how many instances it holds."""
        now = database_now_us()
        # A reservation counts for the node it is reserved for: it is about to claim it.
        lease = instance_leases
        owned = (
            sa.select(sa.func.count())
            .where(
                sa.or_(
                    sa.and_(lease.c.owner_node == nodes.c.id, lease.c.expire_us > now),
                    sa.and_(
                        lease.c.reserved_for == nodes.c.id,
                        lease.c.expire_us <= now,
                        lease.c.reserved_until_us > now,
                    ),
                )
            )
            .scalar_subquery()
        )
        query = sa.select(
            nodes.c.id, nodes.c.address, nodes.c.max_instances, owned.label("owned")
        ).where(nodes.c.heartbeat_us > now - _micros(heartbeat_within_seconds))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            NodeLoad(row.id, row.address, int(row.owned), int(row.max_instances)) for row in rows
        ]

    async def owner_of(self, tenant: str, instance_id: str) -> Owner | None:
        """The node holding the instance's unexpired lease, with its address; or, while a
        released lease is reserved, the node it is reserved for (it is about to serve it)."""
        now = database_now_us()
        lease = instance_leases
        held = sa.and_(lease.c.expire_us > now, nodes.c.id == lease.c.owner_node)
        reserved = sa.and_(
            lease.c.expire_us <= now,
            lease.c.reserved_until_us > now,
            nodes.c.id == lease.c.reserved_for,
        )
        query = (
            sa.select(nodes.c.id, nodes.c.address, lease.c.epoch)
            .select_from(lease.join(nodes, sa.or_(held, reserved)))
            .where(lease.c.tenant == tenant, lease.c.instance_id == instance_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Owner(row.id, row.address, int(row.epoch))


def _lock_for_acquisition(tenant: str, instance_id: str) -> sa.Select[tuple[int]]:
    """FOR UPDATE conflicts with the KEY SHARE lock every fenced write holds on the row
    (store/fencing.py), so an acquisition waits for each write that passed its check under
    the previous owner. The upsert alone would not: it changes no key column, so PostgreSQL
    takes the weaker lock a renewal takes, which KEY SHARE lets through."""
    return (
        sa.select(instance_leases.c.epoch)
        .where(instance_leases.c.tenant == tenant, instance_leases.c.instance_id == instance_id)
        .with_for_update()
    )


def _open_to(node_id: str, now: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    """A released lease this node may take: not reserved, reserved for it, or no longer."""
    lease = instance_leases
    return sa.or_(
        lease.c.reserved_for.is_(None),
        lease.c.reserved_for == node_id,
        lease.c.reserved_until_us <= now,
    )


def _among(keys: list[InstanceKey]) -> sa.ColumnElement[bool]:
    return sa.tuple_(instance_leases.c.tenant, instance_leases.c.instance_id).in_(keys)


def _micros(seconds: float) -> int:
    return int(seconds * 1_000_000)
