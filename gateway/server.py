"""The gRPC server: builds it, serves until told to stop, and stops in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import cast

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from zapgate.gateway.cluster.forwarding import Forwarder, forwarder_of
from zapgate.gateway.config import ServeConfig, TlsConfig
from zapgate.gateway.http.app import http_app
from zapgate.gateway.http.grpc_bridge import MethodHandlers
from zapgate.gateway.http.server import HttpServer
from zapgate.gateway.http.static import console_files
from zapgate.gateway.ops.file_modes import prepare_data_dir
from zapgate.gateway.ops.gc_policy import settle_after_start
from zapgate.gateway.ops.listen_errors import CannotListen
from zapgate.gateway.ops.metrics_http import MetricsServer
from zapgate.gateway.rpc.auth_cache import CachedAuthenticator
from zapgate.gateway.rpc.call_guard import CallGuard
from zapgate.gateway.rpc.handlers import GenericHandler, registrar
from zapgate.gateway.rpc.observer import RpcObserver
from zapgate.gateway.runtime import Runtime, build_runtime
from zapgate.gateway.services.chats import ChatService
from zapgate.gateway.services.contacts import ContactService
from zapgate.gateway.services.events import EventService
from zapgate.gateway.services.groups import GroupService
from zapgate.gateway.services.instances import InstanceService
from zapgate.gateway.services.keys import KeyService
from zapgate.gateway.services.messages import MessageService
from zapgate.gateway.services.simulator import SimulatorService
from zapgate.gateway.services.webhooks import WebhookService
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.single_node import StoreClaim, claim_store
from zapgate.sessions.engine import GRPC_MESSAGE_OPTIONS
from zapgate.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    contact_pb2,
    contact_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    key_pb2,
    key_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
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
    webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    group_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name,
    key_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
)


class _Registration:
    """The gRPC server as services register on it, also keeping each (wrapped) handler for
    the HTTP port, which serves the very same handlers."""

    def __init__(self, server: grpc.aio.Server, handlers: MethodHandlers) -> None:
        self._server = server
        self._handlers = handlers

    def __getattr__(self, name: str) -> object:
        return getattr(self._server, name)

    def add_generic_rpc_handlers(self, generic_handlers: tuple[GenericHandler, ...]) -> None:
        self._server.add_generic_rpc_handlers(generic_handlers)
        self._handlers.add(generic_handlers)


class Gateway:
    """One running zapgate: its runtime (gateway/runtime.py), the gRPC server, the HTTP
    port (gateway/http/) serving the same handlers, health."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.port = 0
        self._runtime: Runtime | None = None
        self._server: grpc.aio.Server | None = None
        self.metrics_server: MetricsServer | None = None  # with --metrics-listen
        self.http_server: HttpServer | None = None  # with --http-listen
        # grpc-stubs does not know the asyncio health servicer.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._stopped = asyncio.Event()
        self._claim: StoreClaim | None = None  # this gateway's alone (store/single_node.py)
        self._forwarder: Forwarder | None = None  # cluster mode: calls go to their owner

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the gateway has not started")
        return self._runtime

    async def start(self) -> None:
        prepare_data_dir(self.config.data_dir)
        cluster = self.config.cluster
        database = await open_database(
            self.config.resolved_database_url,
            stalled_transaction_seconds=cluster.stalled_transaction_seconds if cluster else None,
        )
        try:
            self._claim = await claim_store(database, cluster=self.config.cluster is not None)
            runtime = await build_runtime(self.config, database, self._set_serving)
        except BaseException:
            if self._claim is not None:
                await self._claim.release()
            await database.dispose()
            raise
        self._runtime = runtime
        await self._create_initial_key(runtime.api_keys)
        await runtime.start()

        # No SO_REUSEPORT: a port another process holds is an error, not a shared port.
        server = grpc.aio.server(options=(*GRPC_MESSAGE_OPTIONS, ("grpc.so_reuseport", 0)))
        auth_cache = CachedAuthenticator(runtime.api_keys.authenticate)
        wraps = [
            # Outermost: sees every call's final code. Only when metrics are served: it
            # costs every call a wrapper layer.
            *([RpcObserver(runtime.metrics.rpc).wrap] if self.config.metrics_listen else []),
            CallGuard(auth_cache, self.config.stream_auth_recheck_seconds).wrap,
        ]
        if runtime.cluster is not None:  # innermost: the caller is known, access checked
            self._forwarder = forwarder_of(runtime.cluster, self.config.tls)
            wraps.append(self._forwarder.wrap)
        handlers = MethodHandlers()
        registration = cast(grpc.aio.Server, _Registration(server, handlers))
        self._register_services(registrar(registration, wraps), runtime, auth_cache)
        self.port = _add_port(server, self.config.listen, self.config.tls)
        await server.start()
        self._server = server
        await self._set_serving(runtime.supervision.healthy)
        host = self.config.listen.rpartition(":")[0]
        if runtime.cluster is not None:  # serving: now take instances over
            await runtime.cluster.start(f"{host}:{self.port}")
        log.info("zapgate listening on %s:%d", host, self.port)
        if self.config.http_listen:
            app = http_app(handlers, console_files(), self.config.http_allowed_origins)
            self.http_server = HttpServer(self.config.http_listen, app, self.config.tls)
            self.http_server.start()
            http = self.http_server
            log.info("HTTP (Connect, gRPC-Web) on %s://%s", http.scheme, http.address)
        if self.config.metrics_listen:
            metrics = runtime.metrics
            self.metrics_server = MetricsServer(
                self.config.metrics_listen, metrics.registry, metrics.refresh
            )
            await self.metrics_server.start()
            log.info("metrics on http://%s/metrics", self.metrics_server.address)

    async def _set_serving(self, serving: bool) -> None:
        """Health of the whole server and of each service: NOT_SERVING while one of the
        gateway's supervised tasks keeps failing, and once it stops."""
        if self._stopped.is_set():
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    def _register_services(
        self, server: grpc.aio.Server, runtime: Runtime, auth_cache: CachedAuthenticator
    ) -> None:
        instance_pb2_grpc.add_InstanceServiceServicer_to_server(
            InstanceService(
                runtime.instances,
                runtime.supervisor,
                runtime.dispatcher,
                runtime.contact_book,
                runtime.groups,
            ),
            server,
        )
        message_pb2_grpc.add_MessageServiceServicer_to_server(
            MessageService(
                runtime.messages,
                runtime.instances,
                runtime.dispatcher,
                runtime.engines,
                runtime.inbound,
                runtime.conversation,
            ),
            server,
        )
        event_pb2_grpc.add_EventServiceServicer_to_server(EventService(runtime.events), server)
        contact_pb2_grpc.add_ContactServiceServicer_to_server(
            ContactService(runtime.contact_book, runtime.instances), server
        )
        simulator_pb2_grpc.add_SimulatorServiceServicer_to_server(
            SimulatorService(runtime.engines, runtime.inbox, enabled=self.config.engine == "sim"),
            server,
        )
        webhook_pb2_grpc.add_WebhookServiceServicer_to_server(
            WebhookService(runtime.webhooks, runtime.deliveries, runtime.keyring, runtime.events),
            server,
        )
        group_pb2_grpc.add_GroupServiceServicer_to_server(GroupService(runtime.groups), server)
        key_pb2_grpc.add_KeyServiceServicer_to_server(
            KeyService(runtime.api_keys, auth_cache), server
        )
        chat_pb2_grpc.add_ChatServiceServicer_to_server(
            ChatService(
                runtime.chats,
                runtime.instances,
                runtime.inbound,
                runtime.conversation,
                runtime.chat_settings,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stops accepting calls, lets in-flight calls finish within `grace` seconds, stops
        every connection (sessions stay), then closes the store. Safe to call twice."""
        if self._stopped.is_set():
            return
        await self._set_serving(False)
        self._stopped.set()
        await self._health.enter_graceful_shutdown()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        grace = self.config.grace_seconds if grace is None else grace
        http_draining = None
        if self.http_server is not None:
            http_draining = asyncio.create_task(self.http_server.stop(grace))
        draining = None
        if self._server is not None:
            draining = asyncio.create_task(self._server.stop(grace))
            await asyncio.sleep(0)  # let stop() begin: from here no new call is accepted
            log.info("not accepting new calls; draining in-flight ones (grace %.1fs)", grace)
        if self._runtime is not None:
            await self._runtime.stop()
        if self._claim is not None:  # the last: final snapshots were written under it
            await self._claim.release()
        if draining is not None:
            await draining
        if http_draining is not None:
            await http_draining
        if self._forwarder is not None:  # after the calls it relays
            await self._forwarder.close()
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
    refused = CannotListen(f"--listen: cannot listen on {listen} (in use, or not this host's)")
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
                root_certificates=tls.client_ca_file.read_bytes() if tls.client_ca_file else None,
                require_client_auth=tls.client_ca_file is not None,
            )
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as error:  # newer grpcio raises instead of answering 0
        raise refused from error
    if port == 0:
        raise refused
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
        settle_after_start()  # the collector's settings for serving (gateway/ops/gc_policy.py)
        await stop.wait()
        log.info("signal received: finishing in-flight calls (grace %.1fs)", config.grace_seconds)
    finally:
        await gateway.stop()
