"""Builds a gateway's parts once, in one place, and hands them out as an immutable Runtime:
no part gets a hook or a collaborator assigned after it was made, and none has to check
whether another exists. `start` brings the parts up in order; the gateway's long-lived
loops run under one Supervision."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.cluster.node import ClusterNode
from zapgate.gateway.cluster.ownership import Ownership
from zapgate.gateway.cluster.webhook_leases import WebhookLeases
from zapgate.gateway.config import ServeConfig
from zapgate.gateway.connections.engines import Engines, instance_dir
from zapgate.gateway.connections.master_key import load_keyring
from zapgate.gateway.connections.runtime_dir import prepare_runtime_dir
from zapgate.gateway.connections.session_keeper import SessionKeeper
from zapgate.gateway.connections.store_watch import open_store_watch
from zapgate.gateway.connections.supervisor import Supervisor
from zapgate.gateway.contacts import ContactBook
from zapgate.gateway.events.calls import CallDesk
from zapgate.gateway.events.history import HistoryImport
from zapgate.gateway.events.inbox import Inbox
from zapgate.gateway.events.listeners import Listeners
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.wakeups import CrossNodeWakeups
from zapgate.gateway.groups import GroupDesk
from zapgate.gateway.ops.logs import about_instance_key
from zapgate.gateway.ops.metrics import GatewayMetrics
from zapgate.gateway.sending.conversation import Conversation
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.sending.targets import Targets
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.chat_reads import ChatStore
from zapgate.gateway.store.chat_retention import ChatRetention
from zapgate.gateway.store.chat_settings import ChatSettingsRepository
from zapgate.gateway.store.contacts import ContactRepository
from zapgate.gateway.store.fencing import NO_FENCING, Fencing
from zapgate.gateway.store.group_actions import GroupActionLog
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.leases import LeaseRepository
from zapgate.gateway.store.messages import MessageRepository
from zapgate.gateway.store.number_checks import NumberCheckCache
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.gateway.store.webhook_leases import WebhookLeaseRepository
from zapgate.gateway.store.webhooks import WebhookRepository
from zapgate.gateway.supervision import HealthHook, Supervision
from zapgate.gateway.webhooks.deliveries import WebhookDeliveries
from zapgate.ratelimit.groups import GroupPacer
from zapgate.ratelimit.lookups import LookupBudget
from zapgate.sessions.engine import STORE_FILE_NAME
from zapgate.sessions.events import EngineEvent
from zapgate.sessions.pool import LostRun, PoolConfig, WorkerPool
from zapgate.sessions.vault import Keyring

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Everything one running gateway is made of."""

    config: ServeConfig
    database: AsyncEngine
    metrics: GatewayMetrics
    api_keys: ApiKeyRepository
    instances: InstanceRepository
    messages: MessageRepository
    events: EventLog
    inbound: InboundRepository
    chats: ChatStore
    chat_settings: ChatSettingsRepository
    chat_retention: ChatRetention
    pool: WorkerPool
    keeper: SessionKeeper
    engines: Engines
    dispatcher: Dispatcher
    inbox: Inbox
    conversation: Conversation
    contact_book: ContactBook
    groups: GroupDesk
    supervisor: Supervisor
    supervision: Supervision
    keyring: Keyring
    webhooks: WebhookRepository
    deliveries: WebhookDeliveries
    cluster: ClusterNode | None = None  # cluster mode
    # Cluster mode: the node's one listening connection (other nodes' events, hand-overs).
    wakeups: CrossNodeWakeups | None = None

    async def start(self) -> None:
        """Workers up, then the loops, then every instance that should be connected (in
        cluster mode: those this node takes over, once it serves; see `join_cluster`)."""
        await self.pool.start()
        self.supervision.start("session keeper", self.keeper.run)
        self.supervision.start("event retention", self.events.run_retention)
        self.supervision.start("chat retention", self.chat_retention.run)
        if self.cluster is None:
            await self.supervisor.recover()
            await self.dispatcher.recover()
        else:
            if self.wakeups is not None:
                self.supervision.start("other nodes' events: listener", self.wakeups.listen)
                self.supervision.start("other nodes' events: poll", self.wakeups.poll)
            # A store left here by an earlier run may be older than what another node
            # snapshotted since: sessions of a node come from the state store only.
            instances_dir = self.config.resolved_runtime_dir / "instances"
            await asyncio.to_thread(shutil.rmtree, instances_dir, True)
        self.supervision.start("dispatcher", self.dispatcher.run)
        await self.deliveries.start()
        log.info(
            "engine %s: %d workers, runtime dir %s",
            self.config.engine,
            self.config.engine_workers,
            self.config.resolved_runtime_dir,
        )

    async def stop(self) -> None:
        """Every loop ends (and is awaited), in-flight sends finish, connections stop with
        final snapshots, workers exit, the store closes. The gRPC server stops first."""
        if self.cluster is not None:  # first: hand the instances to other nodes
            await self.cluster.drain(self.config.grace_seconds)
        self.events.close()  # event streams end; clients resume from their cursors
        await self.contact_book.close()
        await self.supervision.stop()  # webhook deliveries too; cursors are committed
        await self.deliveries.close()
        await self.dispatcher.stop()  # no new sends; in-flight ones finish
        await self.supervisor.shutdown()  # ends Connect streams; final snapshots
        if self.cluster is not None:  # after the final writes, which need the leases
            await self.cluster.stop()
        await self.pool.close()
        self.keeper.close()
        self.messages.close()
        self.instances.close()
        await self.database.dispose()


async def build_runtime(
    config: ServeConfig, database: AsyncEngine, on_health: HealthHook
) -> Runtime:
    metrics = GatewayMetrics(database)
    leases = LeaseRepository(database)
    ownership = (
        Ownership(leases, config.cluster.node_id, config.cluster.lease_ttl_seconds)
        if config.cluster is not None
        else None
    )
    fencing: Fencing = ownership if ownership is not None else NO_FENCING
    runtime_dir = config.resolved_runtime_dir
    prepare_runtime_dir(runtime_dir)
    instances_dir = runtime_dir / "instances"

    events = EventLog(database, config.event_retention)
    await events.trim()
    instances = InstanceRepository(database)
    messages = MessageRepository(database, MessageEvents(events))
    inbound = InboundRepository(database)
    keyring = load_keyring(
        config.data_dir,
        config.master_key_file,
        config.previous_master_key_files,
        # every node must open every snapshot: a cluster never generates a key of its own
        create=config.cluster is None,
    )
    keeper = SessionKeeper(
        SnapshotRepository(database),
        keyring,
        lambda tenant, instance_id: (
            instance_dir(instances_dir, tenant, instance_id) / STORE_FILE_NAME
        ),
        config.keeper_timings,
        fencing=fencing,
        store_watch=open_store_watch(),  # None without inotify: the stores are polled
    )

    # The pool reports to the supervisor, which needs the pool: these two are called only
    # once the pool runs, when `supervisor` below exists.
    async def on_engine_event(run_id: int, event: EngineEvent) -> None:
        with about_instance_key(event.key):  # for every log line the event leads to
            await supervisor.on_event(run_id, event)

    async def on_worker_lost(lost: list[LostRun]) -> None:
        for run in lost:
            with about_instance_key(run.key):
                await supervisor.on_worker_lost(run)

    pool = WorkerPool(_pool_config(config), on_engine_event, on_worker_lost)
    engines = Engines(pool, instances, instances_dir, config.sim_server)
    dispatcher = Dispatcher(
        messages,
        instances,
        inbound,
        pool,
        events,
        pause_rules=config.pause_rules,
        observer=metrics,
        fencing=fencing,
        unowned=ownership,
    )
    contact_book = ContactBook(
        engines,
        instances,
        ContactRepository(database),
        NumberCheckCache(database, config.number_check_ttl_seconds),
        LookupBudget(),
        events,
        config.contacts_sync_delay_seconds,
    )
    inbox = Inbox(events, inbound, dispatcher, messages)
    chat_settings = ChatSettingsRepository(database)
    supervisor = Supervisor(
        instances,
        pool,
        keeper,
        instances_dir,
        config.backoff,
        listener=Listeners(dispatcher, [contact_book]),
        events=events,
        inbox=inbox,
        calls=CallDesk(instances, engines, dispatcher, events),
        history=HistoryImport(database, events, chat_settings),
        observer=metrics,
        fencing=fencing,
    )
    supervision = Supervision(on_health)
    webhooks = WebhookRepository(database)
    deliveries = WebhookDeliveries(
        webhooks,
        events,
        instances,
        keyring,
        config.webhooks,
        supervision,
        observer=metrics.webhooks,
        leases=(
            WebhookLeases(config.cluster, WebhookLeaseRepository(database), leases)
            if config.cluster is not None
            else None
        ),
    )
    metrics.watch(pool, keeper, supervision)
    metrics.watch_webhooks(webhooks)
    wakeups = (
        CrossNodeWakeups.for_database(events, database, metrics, config.cluster.node_id)
        if config.cluster is not None
        else None
    )
    return Runtime(
        config=config,
        database=database,
        metrics=metrics,
        api_keys=ApiKeyRepository(database),
        instances=instances,
        messages=messages,
        events=events,
        inbound=inbound,
        chats=ChatStore(database),
        chat_settings=chat_settings,
        chat_retention=ChatRetention(database, chat_settings),
        pool=pool,
        keeper=keeper,
        engines=engines,
        dispatcher=dispatcher,
        inbox=inbox,
        conversation=Conversation(
            dispatcher, Targets(messages, inbound, instances), inbound, engines
        ),
        contact_book=contact_book,
        groups=GroupDesk(engines, instances, GroupPacer(time.time), GroupActionLog(database)),
        supervisor=supervisor,
        supervision=supervision,
        keyring=keyring,
        webhooks=webhooks,
        deliveries=deliveries,
        cluster=(
            ClusterNode(
                config.cluster,
                leases,
                ownership,
                supervisor,
                dispatcher,
                wakeups.on_channel,
                # healthy only while the gateway's own loops are too
                lambda healthy: on_health(healthy and supervision.healthy),
            )
            if config.cluster is not None and ownership is not None and wakeups is not None
            else None
        ),
        wakeups=wakeups,
    )


def _pool_config(config: ServeConfig) -> PoolConfig:
    return PoolConfig(
        size=config.engine_workers,
        engine=config.engine,
        socket_dir=config.resolved_runtime_dir / "workers",
        sim_timings_json=json.dumps(dataclasses.asdict(config.sim_timings)),
        sim_server=config.sim_server or "",
        sim_node=_sim_node_label(config),
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        log_format=config.log_format,
        **_worker_watch(config),
    )


def _worker_watch(config: ServeConfig) -> dict[str, Any]:
    """Pings and, in cluster mode, the workers' watch on a silent core (cluster/settings.py)."""
    if config.cluster is None:
        return {"ping_interval": config.worker_ping_seconds}
    interval = min(config.worker_ping_seconds, config.cluster.worker_ping_seconds)
    return {
        "ping_interval": interval,
        # a wedged worker is still killed after about three normal ping periods
        "ping_failures_to_kill": max(3, math.ceil(3 * config.worker_ping_seconds / interval)),
        "core_silence_seconds": config.cluster.worker_silence_seconds,
    }


def _sim_node_label(config: ServeConfig) -> str:
    """This node's name in a simulated WhatsApp server's record (which node held a device)."""
    if config.cluster is not None:
        return config.cluster.node_id
    return f"{socket.gethostname()} pid {os.getpid()}"
