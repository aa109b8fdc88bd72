"""All webhooks' deliveries: one supervised delivery loop per enabled webhook (so a slow or
dead receiver only ever holds up its own webhook), started with the gateway and whenever a
client creates, changes or re-enables a webhook; stopped when one is disabled or deleted."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from datetime import UTC, datetime

import httpx

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.webhooks import WebhookRecord, WebhookRepository
from zapgate.gateway.supervision import Supervision
from zapgate.gateway.webhooks.delivery import DeliveryLoop, DeliveryObserver, DeliveryParts
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
    ) -> None:
        self._repository = repository
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
        """A loop for every enabled webhook (retries keep their stored schedule)."""
        for webhook in await self._repository.all():
            if webhook.enabled:
                self._start(webhook)

    async def changed(self, tenant: str, webhook_id: str) -> None:
        """The webhook was created, changed or deleted: its loop starts over (or ends) with
        what is stored now. An event being delivered is delivered again (same webhook-id)."""
        async with self._lock:  # two changes at once must not both start a loop
            await self._supervision.cancel(_task_name(tenant, webhook_id))
            webhook = await self._repository.get(tenant, webhook_id)
            if webhook is not None and webhook.enabled:
                self._start(webhook)

    async def close(self) -> None:
        await self._client.aclose()

    def _start(self, webhook: WebhookRecord) -> None:
        name = _task_name(webhook.tenant, webhook.id)

        async def run() -> None:
            # Fresh from the store on every (re)start: the cursor and retry schedule too.
            current = await self._repository.get(webhook.tenant, webhook.id)
            if current is None or not current.enabled:
                return
            await DeliveryLoop(self._parts, current, self._key(current)).run()

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
