"""Graceful hand-over of instances to other nodes: for a node that joined (the busier
nodes give it its fair share) and for a node that stops (it gives everything away).

One instance moves like this, while this node still holds its lease:
1. its sends under way end and its send counters are saved (the dispatcher);
2. its connection stops, its session's final snapshot and the CONNECTING (HANDED_OVER)
   state are written (the supervisor);
3. its lease is released and reserved for the target node, which claims it at its next
   look and connects it from the snapshot, without a QR.
So each moved instance has one short disconnect. A step that fails leaves the instance to
the usual path: its lease is released and any node takes it over."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.placement import drain, live_within, rebalance
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.connections.supervisor import Supervisor
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.store.fencing import Fenced
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository, NodeLoad

log = logging.getLogger(__name__)


class Handover:
    def __init__(
        self,
        settings: ClusterSettings,
        leases: LeaseRepository,
        ownership: Ownership,
        supervisor: Supervisor,
        dispatcher: Dispatcher,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._leases = leases
        self._ownership = ownership
        self._supervisor = supervisor
        self._dispatcher = dispatcher
        self._monotonic = monotonic
        self._moving = asyncio.Lock()  # one batch at a time: the loop's, or the drain's
        self._draining = False

    # ---- a node joined: give the fair share away, a batch per look -----------------------

    async def forever(self) -> None:
        """Ends (normally) once a drain began; a batch under way finishes first."""
        while True:
            await asyncio.sleep(self._settings.takeover_seconds)
            async with self._moving:
                if self._draining:
                    return
                await self.rebalance_once()

    async def rebalance_once(self) -> int:
        """One look: above the fair share, hands at most a batch over to the nodes below
        it. Returns how many instances it handed over."""
        targets = rebalance(
            await self._loads(), self.node_id, len(self._ownership), self._settings.handover_batch
        )
        keys = self._movable()[: len(targets)]
        if not keys:
            return 0
        log.info(
            "above the fair share: handing %d instances over to %s",
            len(keys),
            ", ".join(sorted({t.node_id for t in targets[: len(keys)]})),
        )
        moved = await asyncio.gather(*(self.one(k, t) for k, t in zip(keys, targets, strict=False)))
        return sum(moved)

    # ---- this node stops: give everything away within the grace period -------------------

    async def drain(self, seconds: float) -> tuple[int, int]:
        """Hands this node's connected instances to the other live nodes (within their
        room), a batch at a time, starting no batch after `seconds`. Returns (handed over,
        held before); what is left stops as in a single-node shutdown."""
        deadline = self._monotonic() + seconds
        async with self._moving:  # a rebalancing batch under way ends first
            self._draining = True
            return await self._drain_until(deadline)

    async def _drain_until(self, deadline: float) -> tuple[int, int]:
        await self._leases.retire(self.node_id)  # nobody hands or places anything here
        held = len(self._ownership)
        moved = 0
        while self._monotonic() < deadline:
            keys = self._movable()
            targets = drain(await self._loads(), self.node_id, len(keys))
            batch = list(zip(keys, targets, strict=False))[: self._settings.handover_batch]
            if not batch:
                break
            results = await asyncio.gather(*(self.one(k, t) for k, t in batch))
            moved += sum(results)
            if not any(results):
                break  # nothing moves any more: stop as usual
        log.info("drain: handed %d of %d instances over to other nodes", moved, held)
        return moved, held

    # ---- one instance -------------------------------------------------------------------

    async def one(self, key: InstanceKey, target: NodeLoad) -> bool:
        """Moves one instance to `target`; True once its lease is reserved for it."""
        epoch = self._ownership.start_leaving(key, target)
        if epoch is None:
            return False
        try:
            await self._dispatcher.hand_over(*key)
            await self._supervisor.hand_over(*key, f"moving to node {target.node_id}")
            self._ownership.left(key)
            queued_here = self._dispatcher.release(*key)
            reserve = self._settings.lease_ttl_seconds
            if not await self._leases.hand_over(key, self.node_id, epoch, target.node_id, reserve):
                log.warning("%s/%s: its lease was no longer this node's at the hand-over", *key)
                if queued_here:  # its owner may have read the outbox before one of them
                    await self._ownership.tell_owner(key)
                return False
        except Fenced:
            return False  # lost meanwhile: the node drops it (Fencing.lost)
        except Exception:
            log.exception("hand-over of %s/%s to %s failed", *key, target.node_id)
            self._ownership.drop(key, "its hand-over failed")  # released for anyone
            return False
        log.info("handed %s/%s over to node %s", *key, target.node_id)
        return True

    @property
    def node_id(self) -> str:
        return self._settings.node_id

    def _movable(self) -> list[InstanceKey]:
        return sorted(key for key in self._ownership.held() if self._supervisor.movable(*key))

    async def _loads(self) -> list[NodeLoad]:
        return await self._leases.loads(live_within(self._settings.lease_ttl_seconds))
