"""The gRPC server: builds it, serves until told to stop, and stops in order."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import os
import signal

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.auth_cache import CachedAuthenticator
from zapgate.gateway.call_guard import CallGuard
from zapgate.gateway.config import ServeConfig, TlsConfig
from zapgate.gateway.contacts import ContactBook
from zapgate.gateway.dispatcher import Dispatcher
from zapgate.gateway.eventlog import EventLog
from zapgate.gateway.file_modes import warn_if_exposed
from zapgate.gateway.handlers import registrar
from zapgate.gateway.inbox import Inbox
from zapgate.gateway.listeners import Listeners
from zapgate.gateway.logs import about_instance_key
from zapgate.gateway.master_key import load_keyring
from zapgate.gateway.metrics import GatewayMetrics
from zapgate.gateway.metrics_http import MetricsServer
from zapgate.gateway.rpc_observer import RpcObserver
from zapgate.gateway.runtime_dir import prepare_runtime_dir
from zapgate.gateway.services.contacts import ContactService
from zapgate.gateway.services.events import EventService
from zapgate.gateway.services.instances import InstanceService
from zapgate.gateway.services.messages import MessageService
from zapgate.gateway.services.simulator import SimulatorService
from zapgate.gateway.session_keeper import SessionKeeper
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.contacts import ContactRepository
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.messages import MessageRepository
from zapgate.gateway.store.number_checks import NumberCheckCache
from zapgate.gateway.store.received_media import ReceivedMediaRepository
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.gateway.supervisor import Supervisor, instance_dir
from zapgate.ratelimit.lookups import LookupBudget
from zapgate.sessions.engine import GRPC_MESSAGE_OPTIONS, STORE_FILE_NAME
from zapgate.sessions.events import EngineEvent
from zapgate.sessions.pool import PoolConfig, WorkerPool
from zapgate.v1 import (
    contact_pb2,
    contact_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
)

log = logging.getLogger(__name__)

INITIAL_KEY_FILE = "initial-api-key"
INITIAL_TENANT = "default"
SERVICE_NAMES = (
    instance_pb2.DESCRIPTOR.services_by_name["InstanceService"].full_name,
    simulator_pb2.DESCRIPTOR.services_by_name["SimulatorService"].full_name,
    message_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name,
    event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    contact_pb2.DESCRIPTOR.services_by_name["ContactService"].full_name,
)


class Gateway:
    """One running zapgate: state store, gRPC server, health."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.port = 0
        self._engine: AsyncEngine | None = None
        self._server: grpc.aio.Server | None = None
        self.pool: WorkerPool | None = None
        self.supervisor: Supervisor | None = None
        self.keeper: SessionKeeper | None = None
        self.dispatcher: Dispatcher | None = None
        self.contact_book: ContactBook | None = None
        self.events: EventLog | None = None
        self.messages: MessageRepository | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._keeper_task: asyncio.Task[None] | None = None
        self.metrics: GatewayMetrics | None = None
        self.metrics_server: MetricsServer | None = None  # with --metrics-listen
        # grpc-stubs does not know the asyncio health servicer.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        warn_if_exposed(self.config.data_dir, "data dir")
        self._engine = await open_database(self.config.resolved_database_url)
        self.metrics = GatewayMetrics(self._engine)
        api_keys = ApiKeyRepository(self._engine)
        await self._create_initial_key(api_keys)
        instances = InstanceRepository(self._engine)
        messages = self.messages = MessageRepository(self._engine)
        supervisor = await self._start_engines(instances, messages)

        server = grpc.aio.server(options=GRPC_MESSAGE_OPTIONS)
        wraps = [
            # Outermost: sees every call's final code. Only when metrics are served: it
            # costs every call a wrapper layer.
            *([RpcObserver(self.metrics.rpc).wrap] if self.config.metrics_listen else []),
            CallGuard(CachedAuthenticator(api_keys.authenticate)).wrap,
        ]
        self._register_services(registrar(server, wraps), instances, messages, supervisor)
        self.port = _add_port(server, self.config.listen, self.config.tls)
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        host = self.config.listen.rpartition(":")[0]
        log.info("zapgate listening on %s:%d", host, self.port)
        if self.config.metrics_listen:
            metrics = self.metrics
            self.metrics_server = MetricsServer(
                self.config.metrics_listen, metrics.registry, metrics.refresh
            )
            await self.metrics_server.start()
            log.info("metrics on http://%s/metrics", self.metrics_server.address)

    def _register_services(
        self,
        server: grpc.aio.Server,
        instances: InstanceRepository,
        messages: MessageRepository,
        supervisor: Supervisor,
    ) -> None:
        assert self.dispatcher is not None
        assert self.contact_book is not None
        assert self.events is not None
        instance_pb2_grpc.add_InstanceServiceServicer_to_server(
            InstanceService(instances, supervisor, self.dispatcher, self.contact_book), server
        )
        message_pb2_grpc.add_MessageServiceServicer_to_server(
            MessageService(messages, instances, self.dispatcher, supervisor, self.received_media),
            server,
        )
        event_pb2_grpc.add_EventServiceServicer_to_server(EventService(self.events), server)
        contact_pb2_grpc.add_ContactServiceServicer_to_server(
            ContactService(self.contact_book, instances), server
        )
        simulator_pb2_grpc.add_SimulatorServiceServicer_to_server(
            SimulatorService(supervisor, enabled=self.config.engine == "sim"), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def _start_engines(
        self, instances: InstanceRepository, messages: MessageRepository
    ) -> Supervisor:
        config = self.config
        runtime_dir = config.resolved_runtime_dir
        prepare_runtime_dir(runtime_dir)
        pool_config = PoolConfig(
            size=config.engine_workers,
            engine=config.engine,
            socket_dir=runtime_dir / "workers",
            sim_timings_json=json.dumps(dataclasses.asdict(config.sim_timings)),
            log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            log_format=config.log_format,
            ping_interval=config.worker_ping_seconds,
        )
        self.pool = WorkerPool(pool_config, self._on_engine_event, self._on_worker_lost)
        keyring = load_keyring(
            config.data_dir,
            config.master_key_file,
            config.previous_master_key_files,
            create=True,
        )
        instances_dir = runtime_dir / "instances"
        self.keeper = SessionKeeper(
            SnapshotRepository(self._engine_or_fail()),
            keyring,
            lambda tenant, instance_id: (
                instance_dir(instances_dir, tenant, instance_id) / STORE_FILE_NAME
            ),
            config.keeper_timings,
        )
        self.events = EventLog(self._engine_or_fail(), config.event_retention)
        self.received_media = ReceivedMediaRepository(self._engine_or_fail())
        await self.events.trim()
        self._retention_task = asyncio.create_task(self.events.run_retention())
        self.dispatcher = Dispatcher(
            messages,
            instances,
            self.pool,
            events=self.events,
            pause_rules=config.pause_rules,
        )
        listeners = Listeners(self.dispatcher)
        self.supervisor = Supervisor(
            instances,
            self.pool,
            self.keeper,
            instances_dir,
            config.backoff,
            listener=listeners,
            events=self.events,
            inbox=Inbox(self.events, self.received_media),
        )
        self.contact_book = ContactBook(
            self.supervisor,
            instances,
            ContactRepository(self._engine_or_fail()),
            NumberCheckCache(self._engine_or_fail(), config.number_check_ttl_seconds),
            LookupBudget(),
            self.events,
            config.contacts_sync_delay_seconds,
        )
        listeners.watch(self.contact_book)
        assert self.metrics is not None
        self.metrics.attach(self.supervisor, self.dispatcher, self.pool, self.keeper)
        await self.pool.start()
        self._keeper_task = asyncio.create_task(self.keeper.run(), name="session keeper")
        await self.supervisor.recover()
        await self.dispatcher.start()
        log.info(
            "engine %s: %d workers, runtime dir %s",
            config.engine,
            config.engine_workers,
            runtime_dir,
        )
        return self.supervisor

    def _engine_or_fail(self) -> AsyncEngine:
        assert self._engine is not None, "the state store opens first"
        return self._engine

    async def _on_engine_event(self, run_id: int, event: EngineEvent) -> None:
        assert self.supervisor is not None
        with about_instance_key(event.key):  # for every log line the event leads to
            await self.supervisor.on_event(run_id, event)

    async def _on_worker_lost(self, keys: list[str]) -> None:
        assert self.supervisor is not None
        for key in keys:
            with about_instance_key(key):
                await self.supervisor.on_worker_lost([key])

    async def stop(self, grace: float | None = None) -> None:
        """Stops accepting calls, lets in-flight calls finish within `grace` seconds, stops
        every connection (sessions stay), then closes the store. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self._health.enter_graceful_shutdown()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        draining = None
        if self._server is not None:
            grace = self.config.grace_seconds if grace is None else grace
            draining = asyncio.create_task(self._server.stop(grace))
            await asyncio.sleep(0)  # let stop() begin: from here no new call is accepted
            log.info("not accepting new calls; draining in-flight ones (grace %.1fs)", grace)
        if self.events is not None:
            self.events.close()  # event streams end; clients resume from their cursors
        for task in (self._keeper_task, self._retention_task):
            if task is not None:
                task.cancel()
        if self.contact_book is not None:
            await self.contact_book.close()
        if self.dispatcher is not None:
            await self.dispatcher.stop()  # no new sends; in-flight ones finish
        if self.supervisor is not None:
            await self.supervisor.shutdown()  # ends Connect streams; final snapshots
        if draining is not None:
            await draining
        if self.pool is not None:
            await self.pool.close()
        if self.messages is not None:
            self.messages.close()
        if self._engine is not None:
            await self._engine.dispose()
        log.info("zapgate stopped")

    async def _create_initial_key(self, api_keys: ApiKeyRepository) -> None:
        """On a brand-new store, create a first key so a newcomer can call the API at once.
        It goes to a 0600 file, never to the log."""
        if await api_keys.count():
            return
        key, info = await api_keys.create(INITIAL_TENANT, "created on first start")
        path = self.config.data_dir / INITIAL_KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        log.warning(
            "no API keys existed: created key %s for tenant %r in %s (read it, then delete "
            "the file)",
            info.key_id,
            INITIAL_TENANT,
            path,
        )


def _add_port(server: grpc.aio.Server, listen: str, tls: TlsConfig | None) -> int:
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
            root_certificates=tls.client_ca_file.read_bytes() if tls.client_ca_file else None,
            require_client_auth=tls.client_ca_file is not None,
        )
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return port


async def serve(config: ServeConfig) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await gateway.start()
        # Everything loaded so far lives as long as the process: keep the garbage collector
        # from scanning it again and again (it made the scheduler's p99 lateness 3x worse).
        gc.freeze()
        await stop.wait()
        log.info("signal received: finishing in-flight calls (grace %.1fs)", config.grace_seconds)
    finally:
        await gateway.stop()
