"""Prometheus metrics of webhook deliveries, per webhook (labels `tenant`, `webhook`):
deliveries, failed attempts and retries counted as they happen; lag (events not delivered
yet), attempts and whether it runs read from the state store before each scrape."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from zapgate.gateway.store.webhooks import WebhookRecord, WebhookRepository

log = logging.getLogger(__name__)
LABELS = ["tenant", "webhook"]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WebhookMetrics:
    """The delivery loops' observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "zapgate_webhook_deliveries",
            "Events a webhook's receiver accepted (2xx).",
            LABELS,
            registry=registry,
        )
        self.failures = Counter(
            "zapgate_webhook_failures",
            "Failed delivery attempts (no answer, or not 2xx).",
            LABELS,
            registry=registry,
        )
        self.retries = Counter(
            "zapgate_webhook_retries",
            "Delivery attempts that retried an event after a failure.",
            LABELS,
            registry=registry,
        )
        self.events_lost = Counter(
            "zapgate_webhook_events_lost",
            "Cursors event retention dropped before the webhook delivered them (an upper "
            "bound: some may not have matched its filter).",
            LABELS,
            registry=registry,
        )
        self.latency = Histogram(
            "zapgate_webhook_delivery_seconds",
            "How long accepted deliveries took, request to answer.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def delivered(self, webhook: WebhookRecord, seconds: float) -> None:
        self.deliveries.labels(webhook.tenant, webhook.id).inc()
        self.latency.observe(seconds)

    def failed(self, webhook: WebhookRecord) -> None:
        self.failures.labels(webhook.tenant, webhook.id).inc()

    def retried(self, webhook: WebhookRecord) -> None:
        self.retries.labels(webhook.tenant, webhook.id).inc()

    def lost(self, webhook: WebhookRecord, count: int) -> None:
        self.events_lost.labels(webhook.tenant, webhook.id).inc(count)


class WebhookCollector:
    def __init__(self, repository: WebhookRepository) -> None:
        self._repository = repository
        self._webhooks: list[WebhookRecord] | None = None

    async def refresh(self) -> None:
        try:
            self._webhooks = await self._repository.all_with_lag()
        except Exception:
            log.exception("metrics: reading webhooks failed")
            self._webhooks = None

    def collect(self) -> Iterable[Metric]:
        if self._webhooks is None:
            return
        lag = GaugeMetricFamily(
            "zapgate_webhook_lag_events",
            "Events matching a webhook's filter that are not delivered yet.",
            labels=LABELS,
        )
        attempts = GaugeMetricFamily(
            "zapgate_webhook_attempts",
            "Failed attempts on the event a webhook is delivering (0: none).",
            labels=LABELS,
        )
        enabled = GaugeMetricFamily(
            "zapgate_webhook_enabled",
            "1 while a webhook delivers; 0 once it is FAILING or DISABLED.",
            labels=LABELS,
        )
        for webhook in self._webhooks:
            labels = [webhook.tenant, webhook.id]
            lag.add_metric(labels, webhook.lag_events)
            attempts.add_metric(labels, webhook.attempts)
            enabled.add_metric(labels, 1 if webhook.enabled else 0)
        yield from (lag, attempts, enabled)
