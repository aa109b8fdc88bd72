"""The one place where every public call is authenticated, scoped to its tenant, and where
zapgate's errors become gRPC statuses with `google.rpc` details."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import grpc
import grpc.aio

from zapgate.gateway.errors import Unauthenticated, ZapgateError
from zapgate.gateway.handlers import Handler, wrap_handler
from zapgate.gateway.logs import about_instance
from zapgate.gateway.tenancy import current_tenant as current_tenant
from zapgate.gateway.tenancy import enter_tenant, leave_tenant

log = logging.getLogger(__name__)

# Standard services any gRPC tool expects to call without credentials.
PUBLIC_SERVICE_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Authenticate = Callable[[str], Awaitable[str | None]]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class CallGuard:
    """Wraps each method's handler (see handlers.WrappingRegistrar) in the call's scope."""

    def __init__(self, authenticate: Authenticate) -> None:
        self._authenticate = authenticate

    def wrap(self, method: str, handler: Handler) -> Handler:
        if method.startswith(PUBLIC_SERVICE_PREFIXES):
            return handler
        return wrap_handler(
            handler, lambda request, context: self._call_scope(method, request, context)
        )

    @asynccontextmanager
    async def _call_scope(
        self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        try:
            tenant = await self._tenant_of(context)
            token = enter_tenant(tenant)
            log.debug("call started: %s (tenant %s)", method, tenant)
            # Lines logged for a call naming an instance concern that instance.
            instance_id = getattr(request, "instance_id", "")
            named = isinstance(instance_id, str) and instance_id
            try:
                with about_instance(tenant, instance_id) if named else nullcontext():
                    yield
            finally:
                leave_tenant(token)
        except ZapgateError as error:
            await _abort(context, error)
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            log.exception("unhandled error in %s", method)
            await _abort(context, ZapgateError("internal error; see the server log"))

    async def _tenant_of(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        token = bearer_token(context.invocation_metadata())
        if not token:
            raise Unauthenticated("missing `authorization: Bearer <api key>` metadata")
        tenant = await self._authenticate(token)
        if tenant is None:
            raise Unauthenticated("unknown or revoked API key")
        return tenant


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: ZapgateError) -> None:
    status = error.to_status()
    await context.abort(
        error.code,
        error.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )
