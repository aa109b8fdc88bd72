"""This gateway as one node of a cluster: announces itself, renews its leases, takes over
instances nobody holds, and applies acquisitions and losses to the supervisor and the
dispatcher. Its loops run under a Supervision of their own, stopped after the supervisor's
final writes (which need the leases) and before the node leaves."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable

from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.connections.supervisor import Supervisor
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository, NodeLoad
from zapgate.gateway.supervision import HealthHook, Supervision

log = logging.getLogger(__name__)


class ClusterNode:
    def __init__(
        self,
        settings: ClusterSettings,
        leases: LeaseRepository,
        ownership: Ownership,
        supervisor: Supervisor,
        dispatcher: Dispatcher,
        on_health: HealthHook | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._leases = leases
        self.ownership = ownership
        self._supervisor = supervisor
        self._dispatcher = dispatcher
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 (spreading claims, not crypto)
        self.supervision = Supervision(on_health)
        self._renewed_at = 0.0  # when the last successful renewal started (monotonic)

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    async def start(self, address: str) -> None:
        await self._leases.register(
            self.node_id, self.settings.address or address, self.settings.max_instances
        )
        self._renewed_at = self._monotonic()
        log.info(
            "cluster node %s (lease TTL %.1fs, at most %d instances)",
            self.node_id,
            self.settings.lease_ttl_seconds,
            self.settings.max_instances,
        )
        self.supervision.start("ownership changes", self._apply_changes)
        self.supervision.start("lease renewal", self._renew_forever)
        self.supervision.start("takeover", self._take_over_forever)

    async def stop(self) -> None:
        """After the supervisor's shutdown: the loops end, the leases expire at once so
        other nodes take the instances over without waiting for a TTL."""
        await self.supervision.stop()
        try:
            await self._leases.leave(self.node_id)
        except Exception:  # they expire by themselves within a TTL
            log.exception("could not release this node's leases")

    # ---- renewal --------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.renew_seconds)
            await self.renew_once()

    async def renew_once(self) -> None:
        """Renews the held leases. Past its TTL with no renewal (paused, cut off from the
        database), the node must assume every lease lost and stops every connection at
        once, before anything else."""
        ttl = self.settings.lease_ttl_seconds
        if self._monotonic() - self._renewed_at >= ttl:
            self.ownership.drop_all("no renewal for a whole lease TTL")
        started = self._monotonic()
        before = self.ownership.held()
        try:
            still = await asyncio.wait_for(
                self._leases.renew(self.node_id, before, ttl), self.settings.renew_seconds
            )
        except (TimeoutError, OSError, ConnectionError) as error:
            log.warning("lease renewal failed: %s", error)
            return
        except Exception:
            log.exception("lease renewal failed")
            return
        if self._monotonic() - started >= ttl:  # answered too late to trust
            self.ownership.drop_all("the renewal took a whole lease TTL")
            return
        self._renewed_at = started
        self.ownership.renewed(before, still)

    # ---- takeover -------------------------------------------------------------------------

    async def _take_over_forever(self) -> None:
        while True:
            await self.take_over_once()
            await asyncio.sleep(self.settings.takeover_seconds)

    async def take_over_once(self) -> int:
        """Claims instances nobody holds (their node died, or never had one), when this
        node is among the least loaded, up to its maximum and its fair share. Returns how
        many it acquired."""
        room = self.settings.max_instances - len(self.ownership)
        if room <= 0:
            return 0
        candidates = await self._leases.claimable(limit=room)
        if not candidates:
            return 0
        share = self._fair_share(
            await self._leases.loads(self.settings.lease_ttl_seconds * 2 / 3), len(candidates)
        )
        self._rng.shuffle(candidates)  # nodes claiming at once rarely want the same rows
        acquired = 0
        for key in candidates[: min(share, room)]:
            if await self.ownership.acquire(key):
                acquired += 1
        if acquired:
            log.info("took over %d instances", acquired)
        return acquired

    def _fair_share(self, loads: list[NodeLoad], candidates: int) -> int:
        """0 unless this node is among the least loaded live nodes with room; then the
        candidates split among those."""
        mine = len(self.ownership)
        others = [n for n in loads if n.node_id != self.node_id and n.owned < n.max_instances]
        least = min([mine, *(n.owned for n in others)])
        if mine > least:
            return 0  # a less loaded node takes them
        peers = 1 + sum(1 for n in others if n.owned == least)
        return math.ceil(candidates / peers)

    # ---- applying acquisitions and losses --------------------------------------------------

    async def _apply_changes(self) -> None:
        while True:
            change = await self.ownership.changes.get()
            tenant, instance_id = change.key
            try:
                if change.acquired:
                    await self._adopt(change.key)
                else:
                    await self._release(change.key)
            except Exception:  # one instance never stops the others' changes
                log.exception("applying the ownership change of %s/%s failed", tenant, instance_id)

    async def _adopt(self, key: InstanceKey) -> None:
        if key not in self.ownership.held():
            return  # lost again meanwhile
        await self._dispatcher.adopt(*key)
        await self._supervisor.adopt(*key)

    async def _release(self, key: InstanceKey) -> None:
        await self._supervisor.release(*key)
        self._dispatcher.release(*key)
        try:
            await self._leases.release(self.node_id, [key])
        except Exception:  # it expires by itself
            log.warning("could not release the lease of %s/%s", *key)
