"""Takes over instances nobody holds (their node died, paused or left, or they never had
one) while this node is among the least loaded: at most its fair share of them per look,
never beyond its maximum; and, first, those handed over or placed on this node. Instances
left without an owner for a whole TTL more (the least loaded node is not taking them) go to
any node with room. A node whose own renewals fail takes nothing. Claims are atomic in the
database, so two nodes looking at once never both win an instance."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable

from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.placement import live_within
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.sending.wakeup import Wakeup
from zapgate.gateway.store.leases import LeaseRepository, NodeLoad

log = logging.getLogger(__name__)


class Takeover:
    def __init__(
        self,
        settings: ClusterSettings,
        leases: LeaseRepository,
        ownership: Ownership,
        rng: random.Random | None = None,
        renewing: Callable[[], bool] = lambda: True,
    ) -> None:
        self._settings = settings
        self._renewing = renewing
        self._leases = leases
        self._ownership = ownership
        self._rng = rng or random.Random()  # noqa: S311 (spreading claims, not crypto)
        self._woken = Wakeup()

    async def forever(self) -> None:
        while True:
            await self._end_stalled_sessions()
            await self.once()
            await self._woken.wait(self._settings.takeover_seconds)

    async def _end_stalled_sessions(self) -> None:
        """A frozen node's session stopped mid-statement keeps its locks (the lease rows this
        node would claim among them) and PostgreSQL never ends it: every look ends those
        stalled for half a TTL (store/leases.py `end_stalled_sessions`)."""
        try:
            ended = await self._leases.end_stalled_sessions(
                self._settings.stalled_transaction_seconds
            )
        except Exception as error:  # the next look tries again
            log.warning("could not end stalled database sessions: %s", error)
            return
        if ended:
            log.warning("ended %d database sessions stalled mid-statement", ended)

    def wake(self) -> None:
        """An instance was just handed over or placed here: look now, not at the next look."""
        self._woken.set()

    async def once(self) -> int:
        """One look; returns how many instances this node acquired."""
        room = self._settings.max_instances - len(self._ownership)
        if room <= 0 or not self._renewing():
            return 0
        # Handed over (or placed) to this node: its own to claim, whatever the loads say.
        handed = 0
        for key in await self._leases.reserved_for(self._settings.node_id, room):
            if await self._ownership.acquire(key):
                handed += 1
        if handed:
            log.info("claimed %d instances handed over to this node", handed)
        room -= handed
        if room <= 0:
            return handed
        candidates = await self._leases.claimable(limit=room)
        if not candidates:
            return handed
        loads = await self._leases.loads(live_within(self._settings.lease_ttl_seconds))
        share = self.fair_share(loads, len(candidates))
        if share == 0:
            # A less loaded node should take them; those it has left for a whole TTL more
            # (it cannot keep its leases, or is too slow) are anyone's.
            candidates = await self._leases.claimable(
                limit=room, expired_for_seconds=self._settings.lease_ttl_seconds
            )
            share = len(candidates)
        self._rng.shuffle(candidates)  # nodes claiming at once rarely want the same rows
        acquired = 0
        for key in candidates[: min(share, room)]:
            if await self._ownership.acquire(key):
                acquired += 1
        if acquired:
            log.info("took over %d instances", acquired)
        return handed + acquired

    def fair_share(self, loads: list[NodeLoad], candidates: int) -> int:
        """0 unless this node is among the least loaded live nodes with room; then the
        candidates split among those."""
        mine = len(self._ownership)
        others = [
            n for n in loads if n.node_id != self._settings.node_id and n.owned < n.max_instances
        ]
        least = min([mine, *(n.owned for n in others)])
        if mine > least:
            return 0  # a less loaded node takes them
        peers = 1 + sum(1 for n in others if n.owned == least)
        return math.ceil(candidates / peers)
