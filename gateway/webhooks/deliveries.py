"""All webhooks' deliveries: one supervised delivery loop per enabled webhook (so a slow or
dead receiver only ever holds up its own webhook), started with the gateway and whenever a
client creates, changes or re-enables a webhook; stopped when one is disabled or deleted.

In cluster mode (with `leases`) a node runs only the loops of the webhooks whose lease it
holds (cluster/webhook_leases.py): it starts and stops them as leases come and go, and a
change made here restarts the loop if this node holds the webhook (another node's loop
restarts at its next renewal, which sees the change)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from datetime import UTC, datetime

import httpx

from zapgate.gateway.cluster.webhook_leases import WebhookChange, WebhookLeases
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.webhooks import WebhookRecord, WebhookRepository
from zapgate.gateway.supervision import Supervision
from zapgate.gateway.webhooks.delivery import (
    DeliveryLease,
    DeliveryLoop,
    DeliveryObserver,
    DeliveryParts,
)
from zapgate.gateway.webhooks.evolution import Envelope, to_evolution
from zapgate.gateway.webhooks.payloads import proto_json, test_body
from zapgate.gateway.webhooks.poster import Answer, Poster, new_client
from zapgate.gateway.webhooks.signing import signed_headers
from zapgate.gateway.webhooks.signing_secret import open_secret, secret_key
from zapgate.gateway.webhooks.timings import WebhookSettings
from zapgate.sessions.vault import Keyring
from zapgate.v1 import event_pb2, webhook_pb2

log = logging.getLogger(__name__)


class NoObserver:
    def delivered(self, webhook: WebhookRecord, seconds: float) -> None:
        pass

    def failed(self, webhook: WebhookRecord) -> None:
        pass

    def retried(self, webhook: WebhookRecord) -> None:
        pass

    def lost(self, webhook: WebhookRecord, count: int) -> None:
        pass


class WebhookDeliveries:
    def __init__(
        self,
        repository: WebhookRepository,
        events: EventLog,
        instances: InstanceRepository,
        keyring: Keyring,
        settings: WebhookSettings,
        supervision: Supervision,
        observer: DeliveryObserver | None = None,
        leases: WebhookLeases | None = None,
    ) -> None:
        self._repository = repository
        self._leases = leases  # cluster mode
        self._instances = instances
        self._keyring = keyring
        self._supervision = supervision
        self.settings = settings
        self._client: httpx.AsyncClient = new_client(
            settings.max_concurrent, settings.request_timeout_seconds
        )
        self._poster = Poster(self._client, settings.allow_private)
        self._parts = DeliveryParts(
            repository=repository,
            log=events,
            poster=self._poster,
            settings=settings,
            body_of=self._body_of,
            gate=asyncio.Semaphore(settings.max_concurrent),
            observer=observer or NoObserver(),
        )
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """A loop for every enabled webhook (retries keep their stored schedule); in cluster
        mode, for every webhook this node holds, as it acquires them."""
        if self._leases is not None:
            leases = self._leases
            self._supervision.start("webhook leases", leases.forever)
            self._supervision.start("webhook lease changes", lambda: self._apply(leases))
            return
        for webhook in await self._repository.all():
            if webhook.enabled:
                self._start(webhook)

    async def changed(self, tenant: str, webhook_id: str) -> None:
        """The webhook was created, changed or deleted: its loop starts over (or ends) with
        what is stored now. An event being delivered is delivered again (same webhook-id)."""
        lease = None if self._leases is None else self._leases.lease_of((tenant, webhook_id))
        async with self._lock:  # two changes at once must not both start a loop
            await self._supervision.cancel(_task_name(tenant, webhook_id))
            webhook = await self._repository.get(tenant, webhook_id)
            if webhook is not None and webhook.enabled:
                if self._leases is None:
                    self._start(webhook)
                elif lease is not None:
                    self._leases.noted(lease.key, webhook.update_time_us)
                    self._start(webhook, lease)
        if self._leases is not None:
            self._leases.nudge()  # a new or re-enabled webhook is claimed now

    async def _apply(self, leases: WebhookLeases) -> None:
        """Cluster mode: starts and stops loops as this node's webhook leases change."""
        while True:
            change = await leases.changes.get()
            try:
                await self._apply_one(leases, change)
            except Exception:  # one webhook never stops the others' changes
                log.exception("applying the lease change of webhook %s/%s failed", *change.key)

    async def _apply_one(self, leases: WebhookLeases, change: WebhookChange) -> None:
        tenant, webhook_id = change.key
        async with self._lock:
            await self._supervision.cancel(_task_name(tenant, webhook_id))  # cursor committed
            if change.release_epoch:
                await leases.released(change.key, change.release_epoch)
            if change.lease is None or not change.lease.valid():
                return
            webhook = await self._repository.get(tenant, webhook_id)
            if webhook is not None and webhook.enabled:
                self._start(webhook, change.lease)

    async def close(self) -> None:
        """After every loop ended (their cursors committed): in cluster mode the leases
        expire now, so other nodes take the webhooks over at their next look."""
        await self._client.aclose()
        if self._leases is not None:
            try:
                await self._leases.release_all()
            except Exception:  # they expire by themselves within a TTL
                log.exception("could not release this node's webhook leases")

    def _start(self, webhook: WebhookRecord, lease: DeliveryLease | None = None) -> None:
        name = _task_name(webhook.tenant, webhook.id)

        async def run() -> None:
            # Fresh from the store on every (re)start: the cursor and retry schedule too.
            current = await self._repository.get(webhook.tenant, webhook.id)
            if current is None or not current.enabled:
                return
            await DeliveryLoop(self._parts, current, self._key(current), lease).run()

        self._supervision.start(name, run)

    def _key(self, webhook: WebhookRecord) -> bytes:
        key = secret_key(open_secret(self._keyring, webhook.tenant, webhook.id, webhook.secret))
        if key is None:  # only valid secrets are ever stored
            raise ValueError(f"webhook {webhook.id}: the stored secret is malformed")
        return key

    async def _body_of(self, webhook: WebhookRecord, event: event_pb2.Event) -> bytes | None:
        if webhook.format != webhook_pb2.WEBHOOK_FORMAT_EVOLUTION:
            return proto_json(event)
        sender = ""
        if event.instance_id:
            instance = await self._instances.get(webhook.tenant, event.instance_id)
            sender = instance.jid if instance is not None else ""
        envelope = Envelope(webhook.url, sender, self.settings.server_url)
        body = to_evolution(event, envelope)
        return None if body is None else json.dumps(body, separators=(",", ":")).encode()

    async def test(self, webhook: WebhookRecord) -> Answer:
        """POSTs a signed test body now, outside the log; nothing about the webhook changes."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = test_body(webhook.format, webhook.id, now)
        headers = signed_headers(
            self._key(webhook), f"test_{secrets.token_hex(8)}", int(time.time()), body
        )
        async with self._parts.gate:
            return await self._poster.post(webhook.url, headers, body)


def _task_name(tenant: str, webhook_id: str) -> str:
    return f"webhook {tenant}/{webhook_id}"
