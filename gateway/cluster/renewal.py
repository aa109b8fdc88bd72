"""Keeps this node's leases: renews them (with the node's heartbeat) every TTL/3, and gives
them all up when it could not renew for a whole TTL (paused, cut off from the database, or
the database too slow): the node must then assume other nodes own them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.store.leases import LeaseRepository

log = logging.getLogger(__name__)


class Renewal:
    def __init__(
        self,
        settings: ClusterSettings,
        leases: LeaseRepository,
        ownership: Ownership,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._leases = leases
        self._ownership = ownership
        self._monotonic = monotonic
        self._renewed_at = monotonic()  # when the last successful renewal started

    def current(self) -> bool:
        """The last renewal succeeded within two renewal periods (one late is fine). A
        node that is not current must not take more instances: it would lose them again at
        its next renewal, while nodes that could keep them wait for it."""
        return self._monotonic() - self._renewed_at < 2 * self._settings.renew_seconds

    def registered(self) -> None:
        """The node just announced itself: that counts as a renewal (it holds nothing)."""
        self._renewed_at = self._monotonic()

    async def forever(self) -> None:
        while True:
            await asyncio.sleep(self._until_next())
            await self.once()

    def _until_next(self) -> float:
        """A renewal period, but never past the moment the held leases may expire: at that
        moment they are given up (a node cut off from the database must stop its
        connections before another node can take them over, not a period later)."""
        period = self._settings.renew_seconds
        left = self._renewed_at + self._settings.lease_ttl_seconds - self._monotonic()
        return left if 0 < left < period else period

    async def once(self) -> None:
        """Renews the held leases. Past the TTL with no renewal, every lease is given up
        first (its connection stops at once), whatever the database would answer."""
        ttl = self._settings.lease_ttl_seconds
        started = self._monotonic()
        deadline = self._renewed_at + ttl  # the held leases may have expired from here on
        if started >= deadline:
            self._ownership.drop_all("no renewal for a whole lease TTL")
            deadline = started + self._settings.renew_seconds  # nothing held: just heartbeat
        before = self._ownership.held()
        try:
            # A slow answer is still good until the deadline; past it nothing is trusted.
            still = await asyncio.wait_for(
                self._leases.renew(self._settings.node_id, before, ttl), deadline - started
            )
        except Exception as error:
            log.warning("lease renewal failed: %s", error or type(error).__name__)
            if self._monotonic() >= deadline:  # timed out at the deadline: give up now
                self._ownership.drop_all("no renewal for a whole lease TTL")
            return
        if self._monotonic() >= deadline:  # answered too late to trust
            self._ownership.drop_all("the renewal answered after the lease TTL")
            return
        self._renewed_at = started
        self._ownership.renewed(before, still)
