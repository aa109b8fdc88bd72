"""Cluster mode: each running webhook is delivered by one node at a time, the holder of its
lease (store/webhook_leases.py). Every TTL/3, and at once when nudged (a webhook was created
or changed on this node), a node renews the leases it holds, hands over those beyond its
fair share (running webhooks / live nodes, rounded up) and claims unheld ones up to it: the
webhooks spread over the nodes, and a dead node's are claimed by the others once its leases
expire. Claims are atomic in the database, so two nodes never both win one.

Acquisitions and losses are queued as changes for the deliveries (webhooks/deliveries.py),
which start and stop the delivery loops; a hand-over releases the lease in the database
only after the loop has ended here, so the next holder never runs beside it.

A lease is good for this node only until its TTL from the start of the last renewal that
kept it (the node's own clock, started before the database's: it ends first). A delivery
loop starts a POST only while its lease has at least one renewal period (TTL/3) left, and
its cursor commits are fenced by the epoch in the database. A lease that lapsed here is
given up, never revived: the node may claim the webhook again, under a new epoch."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from zapgate.gateway.cluster.placement import live_within
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.store.fencing import FenceToken
from zapgate.gateway.store.leases import LeaseRepository
from zapgate.gateway.store.webhook_leases import WebhookKey, WebhookLeaseRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookLease:
    """What a delivery loop holds: the fence of its writes, and whether it may still POST."""

    key: WebhookKey
    token: FenceToken
    holder: WebhookLeases

    def valid(self) -> bool:
        return self.holder.holds(self.key, self.token.epoch)


@dataclass(frozen=True)
class WebhookChange:
    key: WebhookKey
    lease: WebhookLease | None  # a lease: (re)start the loop under it; None: stop the loop
    # Then expire the lease held at this epoch in the database (hand-over); 0: keep it.
    release_epoch: int = 0


@dataclass(frozen=True)
class _Held:
    epoch: int
    update_time_us: int
    valid_until: float  # monotonic


class WebhookLeases:
    def __init__(
        self,
        settings: ClusterSettings,
        repository: WebhookLeaseRepository,
        nodes: LeaseRepository,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._nodes = nodes
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 (spreading claims, not crypto)
        self._held: dict[WebhookKey, _Held] = {}
        self._nudged = asyncio.Event()
        self.changes: asyncio.Queue[WebhookChange] = asyncio.Queue()

    @property
    def node_id(self) -> str:
        return self._settings.node_id

    def held(self) -> list[WebhookKey]:
        return list(self._held)

    def lease_of(self, key: WebhookKey) -> WebhookLease | None:
        held = self._held.get(key)
        if held is None:
            return None
        return WebhookLease(key, FenceToken(self.node_id, held.epoch), self)

    def holds(self, key: WebhookKey, epoch: int) -> bool:
        """True while a POST may start under this lease: held at this epoch, with at least
        one renewal period left (a POST in flight must not outlive the lease)."""
        held = self._held.get(key)
        return held is not None and held.epoch == epoch and self._usable(held, self._monotonic())

    def _usable(self, held: _Held, now: float) -> bool:
        return now + self._settings.renew_seconds < held.valid_until

    def noted(self, key: WebhookKey, update_time_us: int) -> None:
        """This node restarted the webhook's loop after a change made here: its next
        renewal must not restart it again for the same change."""
        held = self._held.get(key)
        if held is not None:
            self._held[key] = _Held(held.epoch, update_time_us, held.valid_until)

    def nudge(self) -> None:
        """Look again now (a webhook was created, changed or re-enabled)."""
        self._nudged.set()

    async def forever(self) -> None:
        while True:
            started = self._monotonic()
            await self.once()
            # Every renew period from the start of the last round, however long it took.
            pause = self._settings.renew_seconds - (self._monotonic() - started)
            try:
                async with asyncio.timeout(max(pause, 0)):
                    await self._nudged.wait()
            except TimeoutError:
                pass
            self._nudged.clear()

    async def once(self) -> None:
        await self._renew()
        await self._balance()

    async def release_all(self) -> None:
        """The node stops, its delivery loops have ended: others take its webhooks now."""
        self._held.clear()
        await self._repository.release(self.node_id)

    async def released(self, key: WebhookKey, epoch: int) -> None:
        """A handed-over webhook's loop has ended here: the lease goes back to the pool
        (only that lease: the node may have acquired the webhook again since)."""
        try:
            await self._repository.release(self.node_id, key, epoch)
        except Exception:  # it expires by itself within a TTL
            log.warning("could not release the lease of webhook %s/%s", *key)

    async def _renew(self) -> None:
        before = dict(self._held)
        if not before:
            return
        ttl = self._settings.lease_ttl_seconds
        started = self._monotonic()
        deadline = min(held.valid_until for held in before.values())
        try:
            renewed = await asyncio.wait_for(
                self._repository.renew(self.node_id, list(before), ttl),
                max(deadline - started, 0.001),
            )
        except Exception as error:  # lapsed leases are given up below, the rest next time
            log.warning("webhook lease renewal failed: %s", error or type(error).__name__)
            renewed = {}
            lapsed_only = True
        else:
            lapsed_only = False
        answered = self._monotonic()
        for key, asked in before.items():
            held = self._held.get(key)
            if held is None or held.epoch != asked.epoch:
                continue  # dropped or re-acquired meanwhile
            kept = renewed.get(key)
            if not self._usable(held, answered):  # lapsed here (its loop ended): not revived
                self._drop(key, "its lease lapsed before a renewal", release=True)
            elif lapsed_only:
                continue
            elif kept is None or kept.epoch != held.epoch:
                self._drop(key, "its renewal found it expired or taken", release=False)
            elif not kept.running:  # stopped (FAILING, DISABLED) or disabled by a client
                self._drop(key, "it no longer runs", release=True)
            else:
                self._held[key] = _Held(held.epoch, kept.update_time_us, started + ttl)
                if kept.update_time_us != held.update_time_us:  # changed on another node
                    self.changes.put_nowait(WebhookChange(key, self.lease_of(key)))

    async def _balance(self) -> None:
        total, unheld = await self._repository.unheld()
        loads = await self._nodes.loads(live_within(self._settings.lease_ttl_seconds))
        live = len({load.node_id for load in loads} | {self.node_id})
        fair = math.ceil(total / live)
        mine = len(self._held)
        if mine > fair:
            for key in self._rng.sample(sorted(self._held), mine - fair):
                self._drop(key, "handed over to spread webhooks over the nodes", release=True)
            return
        self._rng.shuffle(unheld)  # nodes claiming at once rarely want the same rows
        for key in unheld[: fair - mine]:
            await self._acquire(key)

    async def _acquire(self, key: WebhookKey) -> None:
        ttl = self._settings.lease_ttl_seconds
        started = self._monotonic()
        acquired = await self._repository.acquire(key, self.node_id, ttl)
        if acquired is None:
            return
        epoch, update_time_us = acquired
        self._held[key] = _Held(epoch, update_time_us, started + ttl)
        log.info("delivering webhook %s/%s (epoch %d)", *key, epoch)
        self.changes.put_nowait(WebhookChange(key, self.lease_of(key)))

    def _drop(self, key: WebhookKey, why: str, *, release: bool) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        log.info("no longer delivering webhook %s/%s: %s", *key, why)
        self.changes.put_nowait(WebhookChange(key, None, held.epoch if release else 0))
