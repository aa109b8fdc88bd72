"""Retention that passes a webhook's cursor is never a silent skip: the webhook moves past
the gap with a `webhook_status_changed` event counting what was lost, and a metric."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import started_gateway
from tests.test_metrics import scrape, value
from tests.webhook_receiver import Receiver
from tests.webhooks import FAST_WEBHOOKS, Webhooks, append_synced
from zapgate.gateway.events.log import Retention
from zapgate.v1 import event_pb2 as epb

STATUS = epb.WebhookStatus
# Count-based, and trimmed only when the test says so: no clock involved.
KEEP_TWO = Retention(max_events=2, check_seconds=3600.0)


async def test_events_dropped_before_delivery_are_reported(
    tmp_path: Path, database_url: str, tenant: str
) -> None:
    async with (
        started_gateway(
            tmp_path,
            database_url=database_url,
            webhooks=FAST_WEBHOOKS,
            event_retention=KEEP_TWO,
            metrics_listen="127.0.0.1:0",
        ) as running,
        Receiver() as receiver,
    ):
        client = await Webhooks.for_tenant(running, tenant)
        webhook, _ = await client.create(receiver.url, types=[epb.EVENT_TYPE_CONTACTS_SYNCED])
        webhook.enabled = False
        paused = await client.update(webhook, "enabled")
        for n in range(1, 6):
            await append_synced(running, tenant, "sales", n)
        events = running.gateway.runtime.events
        assert await events.trim() >= 3  # synced 1..3 are gone, undelivered
        paused.enabled = True
        await client.update(paused, "enabled")
        accepted = await receiver.wait_accepted(2)
        assert [r.json()["contactsSynced"]["added"] for r in accepted] == [4, 5]

        # The gap is in the log (for every subscriber, whatever the webhook's own filter).
        changes = await events.read(tenant, 0, (), (epb.EVENT_TYPE_WEBHOOK_STATUS_CHANGED,), 100)
        [gap] = [e.webhook_status_changed for e in changes if e.webhook_status_changed.events_lost]
        assert gap.webhook_id == webhook.id
        assert gap.status == STATUS.WEBHOOK_STATUS_ACTIVE
        assert gap.reason.startswith("gap: event retention dropped cursors")
        # The paused webhook's cursor, up to just before the oldest retained event.
        assert gap.cursor == events.oldest - 1
        assert gap.events_lost == gap.cursor - paused.delivery.cursor
        assert gap.events_lost >= 3
        samples = await scrape(running)
        labels = {"tenant": tenant, "webhook": webhook.id}
        assert value(samples, "zapgate_webhook_events_lost_total", **labels) == gap.events_lost
        done = await client.wait_for(webhook.id, lambda w: w.delivery.lag_events == 0)
        assert done.delivery.status == STATUS.WEBHOOK_STATUS_ACTIVE
