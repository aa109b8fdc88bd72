"""Fencing of owner-only writes when several nodes share one PostgreSQL (gateway/cluster).

A node writes an instance's session snapshot, its state transitions and the outbox hand-off
only while it holds the instance's lease at the epoch it acquired. Each such write runs
`hold_fence` first, in its own transaction: it locks the lease row FOR KEY SHARE and raises
`Fenced` unless the row still names this node, this epoch and an unexpired time. Every
acquisition locks the row FOR UPDATE first (store/leases.py), which conflicts with KEY SHARE:
a takeover waits for every write that passed its check to commit, or the write sees the new
owner. The owner's renewal only updates `expire_us` (no key column), which takes a lock
KEY SHARE does not conflict with: a fenced write waiting on the event-order lock (held by a
paused node) never holds the owner's renewal up. A node that was paused or cut off past
its lease therefore cannot overwrite what the new owner wrote. Single-node gateways pass no
token (None): nothing is checked, nothing queried."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.gateway.rpc.errors import Unavailable
from zapgate.gateway.store.schema import instance_leases


class Fenced(Unavailable):
    """This node no longer holds the instance's lease: it must drop the instance. A call
    that meets it mid-way answers UNAVAILABLE (retry: the new owner serves it)."""

    def __init__(self, tenant: str, instance_id: str, node_id: str, epoch: int) -> None:
        super().__init__(
            f"{tenant}/{instance_id}: node {node_id} no longer holds its lease (epoch {epoch}); "
            "another node owns it now",
            metadata={"instance_id": instance_id},
        )
        self.tenant = tenant
        self.instance_id = instance_id


@dataclass(frozen=True)
class FenceToken:
    """The lease this node holds on one instance."""

    node_id: str
    epoch: int


def database_now_us() -> sa.ColumnElement[int]:
    """The database's clock in microseconds (PostgreSQL): leases never compare two nodes'
    clocks."""
    seconds = sa.func.extract("epoch", sa.func.clock_timestamp())
    return sa.cast(seconds * 1_000_000, sa.BigInteger)


def lease_held(tenant: str, instance_id: str, token: FenceToken) -> sa.ColumnElement[bool]:
    return sa.and_(
        instance_leases.c.tenant == tenant,
        instance_leases.c.instance_id == instance_id,
        instance_leases.c.owner_node == token.node_id,
        instance_leases.c.epoch == token.epoch,
        instance_leases.c.expire_us > database_now_us(),
    )


async def hold_fence(
    conn: AsyncConnection, tenant: str, instance_id: str, token: FenceToken | None
) -> None:
    """Raises Fenced unless `token` is still the instance's valid lease; keeps the lease row
    from changing until this transaction ends. No-op (no query) without a token."""
    if token is None:
        return
    query = (
        sa.select(instance_leases.c.epoch)
        .where(lease_held(tenant, instance_id, token))
        # KEY SHARE, not SHARE: renewals (plain updates of expire_us) pass; acquisitions,
        # which lock FOR UPDATE first, wait (see the module's docstring).
        .with_for_update(read=True, key_share=True)
    )
    if (await conn.execute(query)).first() is None:
        raise Fenced(tenant, instance_id, token.node_id, token.epoch)


class Fencing(Protocol):
    """What owner-only writers (supervisor, session keeper, dispatcher) ask of the node."""

    def token(self, tenant: str, instance_id: str) -> FenceToken | None:
        """The lease to check the write against; None when not clustered. Raises Fenced
        when clustered and this node does not hold the instance."""
        ...

    def lost(self, tenant: str, instance_id: str) -> None:
        """A write was fenced: the node drops the instance (soon, in a task of its own)."""
        ...

    async def ensure_owner(
        self, tenant: str, instance_id: str, *, claim: bool = True, place: bool = False
    ) -> None:
        """Before a call that acts on the instance here: passes when this node holds the
        lease, acquires a free one (with `claim`; with `place` only when no live node is
        less loaded, else it is reserved for that node), or raises InstanceOnAnotherNode
        (or InstanceNotRunning when nobody holds it). No-op when not clustered."""
        ...

    async def refuse_other_owner(self, tenant: str, instance_id: str) -> None:
        """Before a change the owner's memory must see (pausing sending): raises
        InstanceOnAnotherNode when another node holds the instance; passes when this node
        or none does (the next owner reads it from the store). No-op when not clustered."""
        ...


class NoFencing:
    """Single node: every write is the owner's."""

    def token(self, tenant: str, instance_id: str) -> FenceToken | None:
        return None

    def lost(self, tenant: str, instance_id: str) -> None:
        pass

    async def ensure_owner(
        self, tenant: str, instance_id: str, *, claim: bool = True, place: bool = False
    ) -> None:
        pass

    async def refuse_other_owner(self, tenant: str, instance_id: str) -> None:
        pass


NO_FENCING: Fencing = NoFencing()
