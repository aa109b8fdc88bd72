"""Prometheus metrics of one gateway, on a registry of its own (not prometheus_client's global
one: a process may run several gateways, as the tests do).

Most values are read from the gateway's own state when Prometheus scrapes (collectors below):
instances by state and the outbox from the state store, workers from the pool, snapshot ages
from the session keeper, failures of supervised tasks, open streams from the RPC observer.
Only what happens in between is counted as it happens: GatewayMetrics is the observer the
supervisor (`transitioned`) and the dispatcher (`message_entered`, `paused`,
`release_lateness`) are built with, and the RPC observer. The names are listed in
docs/runbook.md."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.connections.session_keeper import SessionKeeper
from zapgate.gateway.ops.webhook_metrics import WebhookCollector, WebhookMetrics
from zapgate.gateway.rpc.observer import RpcMetrics
from zapgate.gateway.store.schema import instances, messages
from zapgate.gateway.store.webhooks import WebhookRepository
from zapgate.gateway.supervision import Supervision
from zapgate.ratelimit.health import ERROR_463, ERROR_RUN, LOW_DELIVERY
from zapgate.sessions.pool import WorkerPool
from zapgate.v1 import event_pb2, instance_pb2, message_pb2

log = logging.getLogger(__name__)

S = instance_pb2.InstanceState
R = instance_pb2.StateReason
M = message_pb2.MessageState
LATENESS_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
# Pause reasons are labels only when they come from a fixed set; a client's own reason for
# PauseSending is free text, so it counts as "manual".
AUTOMATIC_PAUSES = (ERROR_RUN, ERROR_463, LOW_DELIVERY, "logged_out", "temporary_ban")
_SUBSCRIBE = event_pb2.DESCRIPTOR.services_by_name["EventService"].methods_by_name["Subscribe"]
SUBSCRIBE_METHOD = f"/{_SUBSCRIBE.containing_service.full_name}/{_SUBSCRIBE.name}"


def state_name(state: int) -> str:
    return S.Name(state).removeprefix("INSTANCE_STATE_")  # type: ignore[arg-type]


def reason_name(reason: int) -> str:
    return R.Name(reason).removeprefix("STATE_REASON_")  # type: ignore[arg-type]


def message_state_name(state: int) -> str:
    return M.Name(state).removeprefix("MESSAGE_STATE_")  # type: ignore[arg-type]


def pause_kind(reason: str) -> str:
    """The label of a pause reason: `temporary_ban_101` -> `temporary_ban`; free text -> manual."""
    if reason.startswith("temporary_ban"):
        return "temporary_ban"
    return reason if reason in AUTOMATIC_PAUSES else "manual"


class GatewayMetrics:
    def __init__(self, engine: AsyncEngine) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.rpc = RpcMetrics(registry)
        self.transitions = Counter(
            "zapgate_instance_transitions",
            "Persisted instance state transitions, by the state entered and its reason.",
            ["state", "reason"],
            registry=registry,
        )
        self.reconnects = Counter(
            "zapgate_instance_reconnects",
            "Automatic reconnect attempts (after a drop, a failed connect, a ban's end, a "
            "worker crash or a gateway restart).",
            registry=registry,
        )
        self.messages = Counter(
            "zapgate_messages",
            "Outbox messages that entered each state (QUEUED: accepted).",
            ["state"],
            registry=registry,
        )
        self.pauses = Counter(
            "zapgate_sending_pauses",
            "Times sending paused on an instance, by reason (manual: PauseSending).",
            ["reason"],
            registry=registry,
        )
        self.wakeups = Counter(
            "zapgate_event_wakeups",
            "Cluster mode: times this node woke its subscribers and webhook loops for events "
            "other nodes appended, by source (notification: LISTEN/NOTIFY; poll: the safety "
            "poll, or the faster one while the listening connection is down).",
            ["source"],
            registry=registry,
        )
        self._wakeup_series = {
            source: self.wakeups.labels(source) for source in ("notification", "poll")
        }
        self.lateness = Histogram(
            "zapgate_scheduler_lateness_seconds",
            "How late the dispatcher handed each released message on, after the time the "
            "send scheduler had planned for it.",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        # Resolved once: every accepted message counts one (labels() costs a lookup and a
        # lock each time).
        self._message_series: dict[int, Any] = {
            state: self.messages.labels(message_state_name(state))
            for state in M.values()
            if state != M.MESSAGE_STATE_UNSPECIFIED
        }
        for kind in (*AUTOMATIC_PAUSES, "manual"):
            self.pauses.labels(kind)
        self.store = StoreCollector(engine)
        registry.register(self.store)
        self.webhooks = WebhookMetrics(registry)
        self._webhook_collector: WebhookCollector | None = None
        registry.register(RpcCollector(self.rpc))

    def watch(self, pool: WorkerPool, keeper: SessionKeeper, supervision: Supervision) -> None:
        """Reads the state of the gateway's parts at scrape time."""
        self.registry.register(PoolCollector(pool))
        self.registry.register(KeeperCollector(keeper))
        self.registry.register(FailuresCollector(pool, supervision))

    def watch_webhooks(self, webhooks: WebhookRepository) -> None:
        self._webhook_collector = WebhookCollector(webhooks)
        self.registry.register(self._webhook_collector)

    async def refresh(self) -> None:
        """Reads what lives in the state store; called before each scrape."""
        await self.store.refresh()
        if self._webhook_collector is not None:
            await self._webhook_collector.refresh()

    def woken(self, source: str) -> None:
        self._wakeup_series[source].inc()

    def transitioned(self, state: int, reason: int) -> None:
        self.transitions.labels(state_name(state), reason_name(reason)).inc()
        if state == S.INSTANCE_STATE_CONNECTING and reason == R.STATE_REASON_RECONNECTING:
            self.reconnects.inc()

    def message_entered(self, state: int) -> None:
        self._message_series[state].inc()

    def paused(self, reason: str) -> None:
        self.pauses.labels(pause_kind(reason)).inc()

    def release_lateness(self, seconds: float) -> None:
        self.lateness.observe(seconds)


class StoreCollector:
    """Instances by state and the outbox's depth, counted in the state store (the truth for
    every instance, connected or not) before each scrape."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._instances: list[Any] | None = None
        self._outbox: dict[int, int] | None = None

    async def refresh(self) -> None:
        paused = sa.case((instances.c.sending_paused_reason != "", 1), else_=0)
        failing = sa.case((instances.c.keepalive_failing, 1), else_=0)
        by_state = sa.select(
            instances.c.state, sa.func.count(), sa.func.sum(failing), sa.func.sum(paused)
        ).group_by(instances.c.state)
        waiting = (M.MESSAGE_STATE_QUEUED, M.MESSAGE_STATE_SENDING)
        outbox = (
            sa.select(messages.c.state, sa.func.count())
            .where(messages.c.state.in_(waiting))
            .group_by(messages.c.state)
        )
        try:
            async with self._engine.connect() as conn:
                self._instances = list((await conn.execute(by_state)).all())
                self._outbox = {int(s): int(n) for s, n in (await conn.execute(outbox)).all()}
        except Exception:
            log.exception("metrics: reading the state store failed")
            self._instances = self._outbox = None

    def collect(self) -> Iterable[Metric]:
        if self._instances is not None:
            yield from self._instance_metrics(self._instances)
        if self._outbox is not None:
            yield GaugeMetricFamily(
                "zapgate_send_queue_depth",
                "Messages waiting in the outbox (QUEUED, scheduled ones included).",
                value=self._outbox.get(M.MESSAGE_STATE_QUEUED, 0),
            )
            yield GaugeMetricFamily(
                "zapgate_sends_in_flight",
                "Messages handed to an engine and not answered yet (SENDING).",
                value=self._outbox.get(M.MESSAGE_STATE_SENDING, 0),
            )

    def _instance_metrics(self, rows: list[Any]) -> Iterable[Metric]:
        counts: dict[int, int] = {s: 0 for s in S.values() if s != S.INSTANCE_STATE_UNSPECIFIED}
        failing = paused = 0
        for state, count, failing_here, paused_here in rows:
            counts[int(state)] = int(count)
            failing += int(failing_here or 0)
            paused += int(paused_here or 0)
        by_state = GaugeMetricFamily("zapgate_instances", "Instances by state.", labels=["state"])
        for state, count in counts.items():
            by_state.add_metric([state_name(state)], count)
        yield by_state
        yield GaugeMetricFamily(
            "zapgate_instances_keepalive_failing",
            "Connected instances whose WhatsApp keepalives are failing.",
            value=failing,
        )
        yield GaugeMetricFamily(
            "zapgate_instances_sending_paused",
            "Instances whose sending is paused (see zapgate_sending_pauses for why).",
            value=paused,
        )


class RpcCollector:
    def __init__(self, rpc: RpcMetrics) -> None:
        self._rpc = rpc

    def collect(self) -> Iterable[Metric]:
        in_progress = GaugeMetricFamily(
            "zapgate_grpc_calls_in_progress",
            "Calls being served (streams: open streams).",
            labels=["grpc_service", "grpc_method"],
        )
        for method, count in sorted(self._rpc.in_progress.items()):
            service, _, name = method.strip("/").rpartition("/")
            in_progress.add_metric([service, name], count)
        yield in_progress
        yield GaugeMetricFamily(
            "zapgate_event_subscribers",
            "Open EventService.Subscribe streams.",
            value=self._rpc.in_progress[SUBSCRIBE_METHOD],
        )


class PoolCollector:
    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def collect(self) -> Iterable[Metric]:
        labels = ["worker"]
        restarts = CounterMetricFamily(
            "zapgate_engine_worker_restarts",
            "Times an engine worker process died (or was killed unanswering) and was restarted.",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "zapgate_engine_worker_up", "1 while the engine worker answers.", labels=labels
        )
        hosted = GaugeMetricFamily(
            "zapgate_engine_worker_instances", "Instances placed on the worker.", labels=labels
        )
        for slot in self._pool.slots:
            worker = [str(slot.index)]
            restarts.add_metric(worker, slot.restarts)
            up.add_metric(worker, 1 if slot.ready.is_set() else 0)
            hosted.add_metric(worker, len(slot.keys))
        yield from (restarts, up, hosted)


class FailuresCollector:
    """Failures that did not stop anything: a supervised task that failed (and was started
    again), an engine event or a worker-loss report that raised (the pump went on)."""

    def __init__(self, pool: WorkerPool, supervision: Supervision) -> None:
        self._pool = pool
        self._supervision = supervision

    def collect(self) -> Iterable[Metric]:
        failures = CounterMetricFamily(
            "zapgate_task_failures",
            "Failures of the gateway's long-lived tasks (each was logged, and the task went "
            "on or was restarted), by task.",
            labels=["task"],
        )
        failures.add_metric(["engine events"], self._pool.failures)
        for name, count in sorted(self._supervision.failures.items()):
            failures.add_metric([name], count)
        yield failures
        yield GaugeMetricFamily(
            "zapgate_tasks_healthy",
            "1 while no supervised task keeps failing (health is NOT_SERVING otherwise).",
            value=1 if self._supervision.healthy else 0,
        )


class KeeperCollector:
    def __init__(self, keeper: SessionKeeper) -> None:
        self._keeper = keeper

    def collect(self) -> Iterable[Metric]:
        ages = self._keeper.snapshot_ages()
        unsaved = self._keeper.unsaved_ages()
        yield GaugeMetricFamily(
            "zapgate_sessions_watched",
            "Session stores the keeper watches and snapshots.",
            value=self._keeper.watched_count(),
        )
        yield GaugeMetricFamily(
            "zapgate_sessions_polled",
            "Session stores the keeper polls because inotify does not report their writes "
            "(not Linux, or the fs.inotify.max_user_watches limit reached); 0 normally.",
            value=self._keeper.polled_count(),
        )
        yield GaugeMetricFamily(
            "zapgate_session_snapshot_age_max_seconds",
            "Seconds since the least recently snapshotted session was last snapshotted (or "
            "found unchanged).",
            value=max(ages, default=0.0),
        )
        yield GaugeMetricFamily(
            "zapgate_session_unsaved_max_seconds",
            "Seconds the oldest store change not yet in a snapshot has waited: what a "
            "whole-machine crash would lose now (0: every store is saved).",
            value=max(unsaved, default=0.0),
        )
