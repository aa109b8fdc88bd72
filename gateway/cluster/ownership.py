"""Which instances this node holds, at which fencing epoch: the node's answer to every
owner-only writer (store/fencing.py `Fencing`). Acquisitions and losses are queued as
changes; the node (cluster/node.py) applies them to the supervisor and the dispatcher, so
neither has to know the other or the node."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from zapgate.gateway.cluster.placement import least_loaded, live_within
from zapgate.gateway.rpc.errors import InstanceNotRunning, InstanceOnAnotherNode
from zapgate.gateway.store.fencing import Fenced, FenceToken
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository, NodeLoad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    key: InstanceKey
    acquired: bool  # True: adopt it; False: drop it


class Ownership:
    def __init__(self, leases: LeaseRepository, node_id: str, ttl_seconds: float) -> None:
        self._leases = leases
        self.node_id = node_id
        self._ttl = ttl_seconds
        self._held: dict[InstanceKey, int] = {}
        # Being handed over (cluster/handover.py): still held for the final writes, but
        # calls are sent to the node it goes to.
        self._leaving: dict[InstanceKey, NodeLoad] = {}
        self.changes: asyncio.Queue[Change] = asyncio.Queue()

    def held(self) -> dict[InstanceKey, int]:
        return dict(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: InstanceKey) -> bool:
        return key in self._held

    # ---- Fencing ------------------------------------------------------------------------

    def token(self, tenant: str, instance_id: str) -> FenceToken | None:
        epoch = self._held.get((tenant, instance_id))
        if epoch is None:
            raise Fenced(tenant, instance_id, self.node_id, 0)
        return FenceToken(self.node_id, epoch)

    def lost(self, tenant: str, instance_id: str) -> None:
        self.drop((tenant, instance_id), "a write was fenced")

    async def ensure_owner(
        self, tenant: str, instance_id: str, *, claim: bool = True, place: bool = False
    ) -> None:
        """Returns when this node serves the instance (claiming it when free and `claim`);
        otherwise raises with the node that does. With `place`, a free instance is claimed
        only if this node is among the least loaded; else it is reserved for the least
        loaded node, and the caller is sent there."""
        key = (tenant, instance_id)
        if (target := self._leaving.get(key)) is not None:
            raise InstanceOnAnotherNode(instance_id, target.node_id, target.address)
        if key in self._held:
            return
        if claim and place and (target := await self._place_elsewhere(key)) is not None:
            raise InstanceOnAnotherNode(instance_id, target.node_id, target.address)
        if claim and await self.acquire(key):
            return
        owner = await self._leases.owner_of(tenant, instance_id)
        if owner is not None and owner.node_id != self.node_id:
            raise InstanceOnAnotherNode(instance_id, owner.node_id, owner.address)
        raise InstanceNotRunning(
            f"instance {instance_id!r} is served by no node yet: call Connect on any node",
            metadata={"instance_id": instance_id},
        )

    async def _place_elsewhere(self, key: InstanceKey) -> NodeLoad | None:
        """Reserves a free instance for a less loaded live node, which then serves it;
        None when it belongs here (or cannot be reserved: then it is claimed as usual)."""
        loads = await self._leases.loads(live_within(self._ttl))
        target = least_loaded(loads, self.node_id, len(self))
        if target is None or not await self._leases.reserve(key, target.node_id, self._ttl):
            return None
        log.info("%s/%s placed on node %s (less loaded than this one)", *key, target.node_id)
        return target

    async def accepted_unowned(self, tenant: str, instance_id: str) -> bool:
        """sending/unowned.py: after a message was committed for an instance nobody served,
        True when this node serves it now; when another node does, tells it."""
        key = (tenant, instance_id)
        if key in self._held:
            return True
        await self.tell_owner(key)
        return False

    async def tell_owner(self, key: InstanceKey) -> None:
        """When another node holds the instance: asks it to schedule the QUEUED messages of
        the instance its queue misses (store/queue_notices.py)."""
        owner = await self._leases.owner_of(*key)
        if owner is not None and owner.node_id != self.node_id:
            await self._leases.tell_queued(owner.node_id, key)

    async def refuse_other_owner(self, tenant: str, instance_id: str) -> None:
        if (target := self._leaving.get((tenant, instance_id))) is not None:
            raise InstanceOnAnotherNode(instance_id, target.node_id, target.address)
        if (tenant, instance_id) in self._held:
            return
        owner = await self._leases.owner_of(tenant, instance_id)
        if owner is not None and owner.node_id != self.node_id:
            raise InstanceOnAnotherNode(instance_id, owner.node_id, owner.address)

    # ---- acquiring and losing ------------------------------------------------------------

    async def acquire(self, key: InstanceKey) -> bool:
        """Takes the instance's lease if nobody holds it; the node then adopts it."""
        epoch = await self._leases.acquire(*key, self.node_id, self._ttl)
        if epoch is None:
            return False
        self._held[key] = epoch
        log.info("acquired %s/%s (epoch %d)", *key, epoch)
        self.changes.put_nowait(Change(key, acquired=True))
        return True

    def start_leaving(self, key: InstanceKey, target: NodeLoad) -> int | None:
        """A hand-over begins: the epoch it runs under (None if not held)."""
        epoch = self._held.get(key)
        if epoch is not None:
            self._leaving[key] = target
        return epoch

    def left(self, key: InstanceKey) -> None:
        """Handed over: no longer this node's (its lease was released by the hand-over)."""
        self._leaving.pop(key, None)
        self._held.pop(key, None)

    def stay(self, key: InstanceKey) -> None:
        """A hand-over that did not happen: calls are served here again."""
        self._leaving.pop(key, None)

    def drop(self, key: InstanceKey, why: str) -> None:
        self._leaving.pop(key, None)
        if self._held.pop(key, None) is None:
            return
        log.warning("lost the lease of %s/%s (%s): stopping its connection", *key, why)
        self.changes.put_nowait(Change(key, acquired=False))

    def renewed(self, before: dict[InstanceKey, int], still: dict[InstanceKey, int]) -> None:
        """After a renewal that started when `before` was held: whatever it did not renew
        at the same epoch is lost (acquired since then: not judged by it)."""
        for key, epoch in before.items():
            if still.get(key) != epoch and self._held.get(key) == epoch:
                self.drop(key, "its renewal found it expired or taken")

    def drop_all(self, why: str) -> None:
        for key in list(self._held):
            self.drop(key, why)
