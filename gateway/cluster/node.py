"""This gateway as one node of a cluster: announces itself, keeps its leases (renewal.py),
takes over instances nobody holds (takeover.py), hands instances over to less loaded nodes
and drains before it stops (handover.py), and applies acquisitions and losses to the
supervisor and the dispatcher. Its loops run under a Supervision of their own, stopped
after the supervisor's final writes (which need the leases) and before the node leaves."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from zapgate.gateway.cluster.handover import Handover
from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.renewal import Renewal
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.cluster.takeover import Takeover
from zapgate.gateway.connections.supervisor import Supervisor
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.store import handover_notices, queue_notices
from zapgate.gateway.store.leases import InstanceKey, LeaseRepository
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
        on_channel: Callable[[str, Callable[[str], None]], None],
        on_health: HealthHook | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._leases = leases
        self.ownership = ownership
        self._supervisor = supervisor
        self._dispatcher = dispatcher
        self.renewal = Renewal(settings, leases, ownership, monotonic)
        self.takeover = Takeover(settings, leases, ownership, rng, self.renewal.current)
        self.handover = Handover(settings, leases, ownership, supervisor, dispatcher, monotonic)
        self.supervision = Supervision(on_health)
        self._adoptions: asyncio.Queue[InstanceKey] = asyncio.Queue()
        self._releases: asyncio.Queue[InstanceKey] = asyncio.Queue()
        self._adopting: tuple[InstanceKey, asyncio.Future[None]] | None = None
        self._releasing: set[asyncio.Task[None]] = set()
        # On the node's one listening connection (events/wakeups.py); while it is down the
        # takeover loop's regular look claims what was handed over here.
        on_channel(
            handover_notices.CHANNEL, handover_notices.for_node(self.node_id, self.takeover.wake)
        )
        # Messages other nodes committed for instances this node adopted meanwhile.
        self._queued: asyncio.Queue[InstanceKey] = asyncio.Queue()
        on_channel(
            queue_notices.CHANNEL, queue_notices.for_node(self.node_id, self._queued.put_nowait)
        )

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    async def start(self, address: str) -> None:
        await self._leases.register(
            self.node_id, self.settings.address or address, self.settings.max_instances
        )
        self.renewal.registered()
        log.info(
            "cluster node %s (lease TTL %.1fs, at most %d instances)",
            self.node_id,
            self.settings.lease_ttl_seconds,
            self.settings.max_instances,
        )
        self.supervision.start("ownership changes", self._sort_changes)
        self.supervision.start("adoptions", self._apply_adoptions)
        self.supervision.start("releases", self._apply_releases)
        self.supervision.start("lease renewal", self.renewal.forever)
        self.supervision.start("takeover", self.takeover.forever)
        self.supervision.start("hand-over to less loaded nodes", self.handover.forever)
        self.supervision.start("messages queued by other nodes", self._requeue)

    async def drain(self, seconds: float) -> None:
        """Before the gateway stops (SIGTERM): takes nothing more, and hands its connected
        instances over to the other live nodes within `seconds`; the rest stops as usual.
        The leases keep being renewed meanwhile: the final writes need them."""
        await self.supervision.cancel("takeover")
        try:
            await self.handover.drain(seconds)
        except Exception:  # what was not handed over stops as usual
            log.exception("draining this node failed")

    async def stop(self) -> None:
        """After the supervisor's shutdown: the loops end, the leases expire at once so
        other nodes take the instances over without waiting for a TTL."""
        await self.supervision.stop()
        for task in list(self._releasing):
            task.cancel()
        await asyncio.gather(*self._releasing, return_exceptions=True)
        try:
            await self._leases.leave(self.node_id)
        except Exception:  # they expire by themselves within a TTL
            log.exception("could not release this node's leases")

    # A lost lease must stop its connection at once, so releases never queue behind
    # adoptions: an adoption can wait long on the database (a partition, a busy event log)
    # while another node already connects what this one lost. Adoptions run one at a time;
    # releasing an instance whose adoption is under way cancels that adoption first.

    async def _sort_changes(self) -> None:
        while True:
            change = await self.ownership.changes.get()
            queue = self._adoptions if change.acquired else self._releases
            queue.put_nowait(change.key)
            if not change.acquired and self._adopting is not None:
                key, adoption = self._adopting
                if key == change.key:
                    adoption.cancel()

    async def _apply_adoptions(self) -> None:
        while True:
            key = await self._adoptions.get()
            adoption = asyncio.ensure_future(self._adopt(key))
            self._adopting = (key, adoption)
            try:
                await asyncio.shield(adoption)  # cancelled by a release, not by the loop
            except asyncio.CancelledError:
                if not adoption.done():  # the loop itself is stopping
                    adoption.cancel()
                    raise
                # else a release cancelled it: on to the next one
            except Exception:  # one instance never stops the others' changes
                log.exception("adopting %s/%s failed", *key)
            finally:
                self._adopting = None

    async def _apply_releases(self) -> None:
        # Each in a task of its own: a release ends with a database write (expiring the
        # lease early), which hangs when the node is cut off; the next instance's connection
        # must not wait for it.
        while True:
            key = await self._releases.get()
            task = asyncio.create_task(self._release_logged(key), name=f"release {key}")
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release_logged(self, key: InstanceKey) -> None:
        try:
            await self._release(key)
        except Exception:  # one instance never stops the others' changes
            log.exception("releasing %s/%s failed", *key)

    async def _requeue(self) -> None:
        while True:
            key = await self._queued.get()
            if key not in self.ownership:
                continue  # gone again: its next owner's adoption reads the outbox
            try:
                await self._dispatcher.requeue(*key)
            except Exception:  # one instance never stops the others'
                log.exception("scheduling messages queued for %s/%s failed", *key)

    async def _adopt(self, key: InstanceKey) -> None:
        if key not in self.ownership:
            return  # lost again meanwhile
        try:
            await self._dispatcher.adopt(*key)
            await self._supervisor.adopt(*key)
        except Exception:
            # A won lease nobody adopted would be renewed forever with nothing behind it:
            # give it up (the release below), so the next look, here or on another node,
            # takes the instance over again.
            log.exception("adopting %s/%s failed: releasing its lease", *key)
            self.ownership.drop(key, "its adoption failed")

    async def _release(self, key: InstanceKey) -> None:
        await self._supervisor.release(*key)
        if self._dispatcher.release(*key):
            # Lost while messages waited here: one may have been committed after the new
            # owner's adoption read the outbox; that owner schedules what it misses.
            await self.ownership.tell_owner(key)
        try:
            await self._leases.release(self.node_id, [key])
        except Exception:  # it expires by itself
            log.warning("could not release the lease of %s/%s", *key)
