"""Helpers for webhook tests: fast settings and a client for WebhookService."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from google.protobuf import field_mask_pb2

from tests.conftest import RunningGateway, auth
from zapgate.gateway.webhooks.timings import WebhookSettings
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import webhook_pb2 as pb
from zapgate.v1 import webhook_pb2_grpc

FAST_WEBHOOKS = WebhookSettings(
    request_timeout_seconds=5.0,
    retry_base_seconds=0.05,
    retry_cap_seconds=0.2,
    failing_after_seconds=3600.0,
    allow_private=True,
    poll_seconds=0.2,
)


class Webhooks:
    def __init__(self, running: RunningGateway, key: str) -> None:
        self.running = running
        self.metadata = auth(key)
        self.stub = webhook_pb2_grpc.WebhookServiceStub(running.channel)

    @classmethod
    async def for_tenant(cls, running: RunningGateway, tenant: str) -> Webhooks:
        return cls(running, await running.new_key(tenant))

    async def create(self, url: str, secret: str = "", **fields: object) -> tuple[pb.Webhook, str]:
        request = pb.CreateWebhookRequest(webhook=pb.Webhook(url=url, **fields), secret=secret)  # type: ignore[arg-type]
        reply = await self.stub.CreateWebhook(request, metadata=self.metadata)
        return reply.webhook, reply.secret

    async def get(self, webhook_id: str) -> pb.Webhook:
        request = pb.GetWebhookRequest(webhook_id=webhook_id)
        return (await self.stub.GetWebhook(request, metadata=self.metadata)).webhook

    async def update(self, webhook: pb.Webhook, *paths: str) -> pb.Webhook:
        request = pb.UpdateWebhookRequest(
            webhook=webhook, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
        )
        return (await self.stub.UpdateWebhook(request, metadata=self.metadata)).webhook

    async def wait_for(
        self, webhook_id: str, predicate: Callable[[pb.Webhook], bool], timeout: float = 20
    ) -> pb.Webhook:
        """Polls until the webhook satisfies `predicate` (the timeout only guards hangs)."""
        deadline = time.monotonic() + timeout
        while True:
            webhook = await self.get(webhook_id)
            if predicate(webhook):
                return webhook
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook never matched; last seen:\n{webhook}")
            await asyncio.sleep(0.02)


async def append_synced(running: RunningGateway, tenant: str, instance_id: str, n: int) -> None:
    """One real event in the log (a contact sync's counts, `added` = n)."""
    await running.gateway.runtime.events.append(tenant, instance_id, epb.ContactsSynced(added=n))
