"""Webhook state that must outlive the process: the retry schedule and attempt count across
a gateway restart, and the per-webhook metrics a scrape reports."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import started_gateway
from tests.test_metrics import scrape, value
from tests.webhook_receiver import Received, Receiver
from tests.webhooks import FAST_WEBHOOKS, Webhooks, append_synced
from zapgate.v1 import event_pb2 as epb

STATUS = epb.WebhookStatus


async def test_the_retry_schedule_survives_a_restart(tmp_path: Path, tenant: str) -> None:
    up = False

    async def flaky(_: Received) -> int:
        return 200 if up else 500

    async with Receiver(flaky) as receiver:
        async with started_gateway(tmp_path, webhooks=FAST_WEBHOOKS) as running:
            client = await Webhooks.for_tenant(running, tenant)
            webhook, _ = await client.create(receiver.url)
            await append_synced(running, tenant, "sales", 1)
            before = await client.wait_for(webhook.id, lambda w: w.delivery.attempts >= 3)
            failing_since = before.delivery.failing_since.ToMicroseconds()
        # Stopped: the attempts so far, when failures began and the next attempt are stored.
        async with started_gateway(tmp_path, webhooks=FAST_WEBHOOKS) as running:
            client = await Webhooks.for_tenant(running, tenant)
            after = await client.wait_for(
                webhook.id, lambda w: w.delivery.attempts > before.delivery.attempts
            )
            assert after.delivery.failing_since.ToMicroseconds() == failing_since
            assert after.delivery.status == STATUS.WEBHOOK_STATUS_RETRYING
            up = True
            [request] = await receiver.wait_accepted(1)
            assert request.json()["contactsSynced"]["added"] == 1
            done = await client.wait_for(webhook.id, lambda w: w.delivery.attempts == 0)
            assert done.delivery.lag_events == 0


async def test_metrics_count_deliveries_failures_and_lag(tmp_path: Path, tenant: str) -> None:
    answers = iter([503, 503])

    async def twice_down(_: Received) -> int:
        return next(answers, 200)

    async with (
        started_gateway(tmp_path, webhooks=FAST_WEBHOOKS, metrics_listen="127.0.0.1:0") as running,
        Receiver(twice_down) as receiver,
    ):
        client = await Webhooks.for_tenant(running, tenant)
        webhook, _ = await client.create(receiver.url)
        for n in range(1, 4):
            await append_synced(running, tenant, "sales", n)
        await receiver.wait_accepted(3)
        await client.wait_for(webhook.id, lambda w: w.delivery.lag_events == 0)
        samples = await scrape(running)
        labels = {"tenant": tenant, "webhook": webhook.id}
        assert value(samples, "zapgate_webhook_deliveries_total", **labels) == 3
        assert value(samples, "zapgate_webhook_failures_total", **labels) == 2
        assert value(samples, "zapgate_webhook_retries_total", **labels) == 2
        assert value(samples, "zapgate_webhook_lag_events", **labels) == 0
        assert value(samples, "zapgate_webhook_enabled", **labels) == 1
