"""One webhook's delivery loop: reads the event log from the webhook's cursor and POSTs each
matching event, one at a time and in cursor order, committing the cursor after successes
(every COMMIT_EVERY of them or COMMIT_SECONDS, and whenever it has caught up or fails).

At-least-once: a crash between a receiver's 2xx and the cursor's commit delivers those
events again, with the same `webhook-id` (`evt_<cursor>`). A failed attempt is retried with
exponential backoff and full jitter; the attempt count and the next attempt's time are
stored, so a restart keeps the schedule. Failing for longer than `failing_after_seconds`
stops the webhook (FAILING) and a 410 Gone disables it (DISABLED), each with a
`webhook_status_changed` event; UpdateWebhook(enabled=true) starts it again from its cursor.
A loop only ever waits on its own receiver: other webhooks and the gateway never wait on it.

In cluster mode a loop runs under its webhook's lease (cluster/webhook_leases.py): it starts
a POST only while the lease is valid here, and ends as soon as it is not; every write of
its delivery state (the cursor, failures, a stop, a retention gap with its event) is fenced
by the lease's epoch in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.fencing import FenceToken
from zapgate.gateway.store.webhooks import (
    ACTIVE,
    DISABLED,
    FAILING,
    RETRYING,
    Failure,
    WebhookRecord,
    WebhookRepository,
)
from zapgate.gateway.webhooks.poster import Answer, Poster
from zapgate.gateway.webhooks.signing import message_id, signed_headers
from zapgate.gateway.webhooks.timings import WebhookSettings, retry_delay
from zapgate.v1 import event_pb2

log = logging.getLogger(__name__)
READ_BATCH = 100
# The cursor is committed after at most this many successes in a row (or this long after
# the first uncommitted one), after any success that ends a run of failures, and whenever
# the loop has caught up. A crash redelivers at most these, under the same webhook-ids.
COMMIT_EVERY = 50
COMMIT_SECONDS = 0.2

# The body of an event for this webhook, or None when its format has none (skipped).
BodyOf = Callable[[WebhookRecord, event_pb2.Event], Awaitable[bytes | None]]


class DeliveryLease(Protocol):
    """Cluster mode: the webhook's lease held by this node."""

    @property
    def token(self) -> FenceToken: ...

    def valid(self) -> bool:
        """A POST may start now (the lease is held, with time to spare)."""
        ...


class DeliveryObserver(Protocol):
    def delivered(self, webhook: WebhookRecord, seconds: float) -> None: ...
    def failed(self, webhook: WebhookRecord) -> None: ...
    def retried(self, webhook: WebhookRecord) -> None: ...
    def lost(self, webhook: WebhookRecord, count: int) -> None: ...


@dataclass(frozen=True)
class DeliveryParts:
    """What every delivery loop shares."""

    repository: WebhookRepository
    log: EventLog
    poster: Poster
    settings: WebhookSettings
    body_of: BodyOf
    gate: asyncio.Semaphore  # requests in flight over all webhooks
    observer: DeliveryObserver
    clock: MicrosClock = system_micros


class DeliveryLoop:
    def __init__(
        self,
        parts: DeliveryParts,
        webhook: WebhookRecord,
        key: bytes,
        lease: DeliveryLease | None = None,
    ) -> None:
        self._parts = parts
        self._webhook = webhook
        self._key = key  # the HMAC key of the webhook's secret
        self._lease = lease  # cluster mode only
        self._fence = None if lease is None else lease.token
        self._cursor = webhook.cursor
        self._attempts = webhook.attempts
        self._failing_since_us = webhook.failing_since_us
        self._next_attempt_us = webhook.next_attempt_us
        self._committed = webhook.cursor
        self._uncommitted = 0
        self._uncommitted_since = 0.0

    async def run(self) -> None:
        """Returns when the webhook stops (FAILING, DISABLED, deleted)."""
        try:
            await self._run()
        finally:  # stopped or cancelled: keep what was delivered (best effort)
            with contextlib.suppress(Exception):
                await self._commit()

    async def _commit(self) -> bool:
        """Stores the cursor of the last success; False once the webhook is gone or stopped."""
        if self._cursor == self._committed:
            return True
        cursor = self._cursor
        webhook = self._webhook
        # Marked committed only once stored: a loop cancelled mid-commit commits again as
        # it ends (run's finally), and the next holder does not deliver these twice.
        stored = await self._parts.repository.delivered(
            webhook.tenant, webhook.id, cursor, self._fence
        )
        self._committed, self._uncommitted, self._uncommitted_since = cursor, 0, 0.0
        return stored

    async def _run(self) -> None:
        parts = self._parts
        webhook = self._webhook
        if self._attempts:  # a retry was due when the gateway stopped: keep its schedule
            await self._sleep_until(self._next_attempt_us)
        while True:
            appended = parts.log.signal()  # taken before reading: no append slips by
            if not await self._passed_by_retention():
                return
            batch = await parts.log.read(
                webhook.tenant, self._cursor, webhook.instance_ids, webhook.types, READ_BATCH
            )
            for event in batch:
                body = await parts.body_of(webhook, event)
                if body is None:
                    self._cursor = event.cursor  # nothing to send; committed with the next
                    continue
                if not await self._deliver(event.cursor, body):
                    return
            if len(batch) < READ_BATCH:
                if not await self._commit():  # caught up: the cursor is stored
                    return
                if parts.log.closed:
                    return
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
                # lands as the append wakes it, and a cancelled loop (webhook disabled or
                # changed) would run on and hold up UpdateWebhook for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(parts.settings.poll_seconds):
                        await appended.wait()

    async def _deliver(self, cursor: int, body: bytes) -> bool:
        """Until the receiver takes the event. False when the webhook stopped."""
        parts, webhook = self._parts, self._webhook
        while True:
            if self._lease is not None and not self._lease.valid():
                log.info("webhook %s: this node no longer holds its lease", webhook.id)
                return False
            if self._lease is None:
                answer = await self._post(cursor, body)
            else:
                answer = await self._post_to_the_end(cursor, body)
            now = parts.clock()
            if answer.ok:
                parts.observer.delivered(webhook, answer.seconds)
                recovered = self._attempts > 0
                self._cursor, self._attempts, self._failing_since_us = cursor, 0, 0
                self._uncommitted += 1
                started = self._uncommitted_since or time.monotonic()
                self._uncommitted_since = started
                due = self._uncommitted >= COMMIT_EVERY
                if recovered or due or time.monotonic() - started >= COMMIT_SECONDS:
                    return await self._commit()
                return True
            parts.observer.failed(webhook)
            if not await self._commit():  # what was delivered before this event
                return False
            if answer.status == 410:
                return await self._stop(DISABLED, "the receiver answered 410 Gone")
            self._attempts += 1
            self._failing_since_us = self._failing_since_us or now
            failing_for = (now - self._failing_since_us) / 1e6
            if failing_for >= parts.settings.failing_after_seconds:
                reason = f"failing for {failing_for:.0f}s; last error: {answer.describe()}"
                return await self._stop(FAILING, reason)
            delay = retry_delay(parts.settings, self._attempts)
            self._next_attempt_us = now + int(delay * 1e6)
            failure = Failure(
                answer.describe(), self._attempts, self._next_attempt_us, self._failing_since_us
            )
            if not await parts.repository.failed(webhook.tenant, webhook.id, failure, self._fence):
                return False
            log.info(
                "webhook %s: event %d failed (%s); attempt %d in %.1fs",
                webhook.id,
                cursor,
                answer.describe(),
                self._attempts + 1,
                delay,
            )
            await self._sleep_until(self._next_attempt_us)
            parts.observer.retried(webhook)

    async def _post_to_the_end(self, cursor: int, body: bytes) -> Answer:
        """Cluster mode: a loop stopped mid-request (its webhook handed over to another
        node, or changed) lets the request end first (within the request timeout) and keeps
        its outcome, so the next holder does not deliver again what the receiver took."""
        posting = asyncio.ensure_future(self._post(cursor, body))
        try:
            return await asyncio.shield(posting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                if (await posting).ok:
                    self._cursor = cursor  # committed as the loop ends
            raise

    async def _post(self, cursor: int, body: bytes) -> Answer:
        parts = self._parts
        headers = signed_headers(self._key, message_id(cursor), int(time.time()), body)
        async with parts.gate:
            return await parts.poster.post(self._webhook.url, headers, body)

    async def _passed_by_retention(self) -> bool:
        """Retention dropped events after the cursor before they were delivered: never a
        silent skip. The loop moves past the gap and says so (an event, a metric, a log);
        the event and the cursor are one write, fenced by the lease in cluster mode. False
        when the webhook stopped or its lease was lost (the loop ends)."""
        parts, webhook = self._parts, self._webhook
        oldest = parts.log.oldest  # 0 until the first trim
        if not oldest or self._cursor >= oldest - 1:
            return True
        first, last = self._cursor + 1, oldest - 1
        lost = last - first + 1
        reason = f"gap: event retention dropped cursors {first}..{last} before delivery"
        change = event_pb2.WebhookStatusChanged(
            webhook_id=webhook.id,
            status=RETRYING if self._attempts else ACTIVE,
            reason=reason,
            cursor=last,
            events_lost=lost,
        )
        row = parts.log.row(webhook.tenant, "", change)
        if not await parts.repository.skipped(webhook.tenant, webhook.id, last, row, self._fence):
            log.info("webhook %s: stopped or no longer held here; the gap is left", webhook.id)
            return False
        parts.log.committed()
        # The successes not yet committed lie before the gap: its write covers them.
        self._cursor = self._committed = last
        self._uncommitted, self._uncommitted_since = 0, 0.0
        parts.observer.lost(webhook, lost)
        log.warning("webhook %s: %s", webhook.id, reason)
        return True

    async def _stop(self, status: int, reason: str) -> bool:
        parts, webhook = self._parts, self._webhook
        change = event_pb2.WebhookStatusChanged(
            webhook_id=webhook.id,
            status=status,  # type: ignore[arg-type]
            reason=reason[:500],
            cursor=self._cursor,
        )
        row = parts.log.row(webhook.tenant, "", change)
        stopped = await parts.repository.stop(
            webhook.tenant, webhook.id, status, reason, row, self._fence
        )
        if stopped:
            parts.log.committed()
            log.warning("webhook %s stopped: %s", webhook.id, reason)
        return False

    async def _sleep_until(self, when_us: int) -> None:
        delay = (when_us - self._parts.clock()) / 1e6
        if delay > 0:
            await asyncio.sleep(delay)
