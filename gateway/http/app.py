"""The HTTP port's application: each public service's generated Connect application (its
paths are `/zapgate.v1.<Service>/<Method>`), the console's files at `/`, CORS around both."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from zapgate.gateway.http.asgi import App, Receive, Scope, Send, respond
from zapgate.gateway.http.cors import Cors
from zapgate.gateway.http.grpc_bridge import MethodHandlers, ServiceAdapter
from zapgate.gateway.http.static import StaticFiles
from zapgate.sessions.engine import MAX_GRPC_MESSAGE_BYTES
from zapgate.v1 import (
    chat_connect,
    chat_pb2,
    contact_connect,
    contact_pb2,
    event_connect,
    event_pb2,
    group_connect,
    group_pb2,
    instance_connect,
    instance_pb2,
    key_connect,
    key_pb2,
    message_connect,
    message_pb2,
    simulator_connect,
    simulator_pb2,
    webhook_connect,
    webhook_pb2,
)

# Each .proto's services and the module connect-python generated for them.
GENERATED: tuple[tuple[Any, ModuleType], ...] = (
    (instance_pb2, instance_connect),
    (message_pb2, message_connect),
    (event_pb2, event_connect),
    (contact_pb2, contact_connect),
    (group_pb2, group_connect),
    (webhook_pb2, webhook_connect),
    (key_pb2, key_connect),
    (chat_pb2, chat_connect),
    (simulator_pb2, simulator_connect),
)


def connect_applications(handlers: MethodHandlers) -> dict[str, App]:
    """By path prefix (`/zapgate.v1.InstanceService`): every service's application, serving
    the handlers the gRPC server runs."""
    applications: dict[str, App] = {}
    for pb2, generated in GENERATED:
        for service in pb2.DESCRIPTOR.services_by_name.values():
            adapter = ServiceAdapter(service.full_name, [m.name for m in service.methods], handlers)
            application = getattr(generated, f"{service.name}ASGIApplication")(
                adapter, read_max_bytes=MAX_GRPC_MESSAGE_BYTES
            )
            applications[application.path] = application
    return applications


class Router:
    """`/<service>/<method>` to the service's application; anything else to the console's
    files (when shipped). Lifespan events are answered here."""

    def __init__(self, services: dict[str, App], files: StaticFiles | None) -> None:
        self._services = services
        self._files = files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: the connection is refused
        service = self._services.get(scope["path"].rpartition("/")[0])
        if service is not None:
            await service(scope, receive, send)
        elif self._files is not None:
            await self._files(scope, receive, send)
        else:
            await respond(send, 404, [(b"content-type", b"text/plain")], b"not found\n")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def http_app(
    handlers: MethodHandlers, files: StaticFiles | None, allowed_origins: tuple[str, ...]
) -> App:
    return Cors(Router(connect_applications(handlers), files), allowed_origins)
