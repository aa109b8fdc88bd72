"""The one place where every public call is authenticated, scoped to its tenant, has its
instance ids put in lower case (they are case-insensitive), is checked against its key's
role and instance scope (access.py), and where zapgate's errors become gRPC statuses with
`google.rpc` details. Server streams (Subscribe, Connect, DownloadMedia) may stay open for
days, so their key is checked again every `recheck_seconds` while they are open: a revoked
key ends them UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextvars import Token
from typing import Any

import grpc
import grpc.aio

from zapgate.gateway.ops.logs import InstanceToken, enter_instance, leave_instance
from zapgate.gateway.rpc.access import MethodAccess
from zapgate.gateway.rpc.errors import (
    Unauthenticated,
    ZapgateError,
    from_busy_store,
    from_engine,
)
from zapgate.gateway.rpc.handlers import Handler, wrap_handler
from zapgate.gateway.rpc.roles import Caller
from zapgate.gateway.rpc.tenancy import current_tenant as current_tenant
from zapgate.gateway.rpc.tenancy import enter_caller, leave_caller
from zapgate.gateway.rpc.validation import normalize_instance_ids
from zapgate.sessions.errors import EngineError

log = logging.getLogger(__name__)

# Standard services any gRPC tool expects to call without credentials.
PUBLIC_SERVICE_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Authenticate = Callable[[str], Awaitable[Caller | None]]
Context = grpc.aio.ServicerContext[Any, Any]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


DEFAULT_RECHECK_SECONDS = 5.0


class CallGuard:
    """Wraps each method's handler (see handlers.WrappingRegistrar) in the call's scope."""

    def __init__(
        self, authenticate: Authenticate, recheck_seconds: float = DEFAULT_RECHECK_SECONDS
    ) -> None:
        self._authenticate = authenticate
        self.recheck_seconds = recheck_seconds

    def wrap(self, method: str, handler: Handler) -> Handler:
        if method.startswith(PUBLIC_SERVICE_PREFIXES):
            return handler
        streaming = handler.response_streaming
        access = MethodAccess(method)
        return wrap_handler(
            handler,
            lambda request, context: _CallScope(self, access, request, context, streaming),
        )

    async def caller_of(self, context: Context) -> tuple[str, Caller]:
        """The call's API key and who it is."""
        token = bearer_token(context.invocation_metadata())
        if not token:
            raise Unauthenticated("missing `authorization: Bearer <api key>` metadata")
        caller = await self._authenticate(token)
        if caller is None:
            raise Unauthenticated("unknown or revoked API key")
        return token, caller

    async def watch_key(
        self, key: str, caller: Caller, context: Context, call: asyncio.Task[Any]
    ) -> None:
        """Runs beside a server stream: once its key no longer authenticates, ends the call
        UNAUTHENTICATED (the status is sent first, so the client sees it rather than a
        cancellation) and cancels the handler, wherever it waits."""
        while True:
            await asyncio.sleep(self.recheck_seconds)
            try:
                if await self._authenticate(key) == caller:
                    continue
            except Exception:  # a store hiccup is no reason to end the stream
                log.warning("re-checking a stream's API key failed", exc_info=True)
                continue
            break
        with contextlib.suppress(grpc.aio.AbortError):
            await _abort(context, Unauthenticated("API key revoked while the stream was open"))
        call.cancel()


class _CallScope:
    """One call: authenticated, allowed (access.py), its caller (and the instance it names,
    for log lines) in context, and errors turned into statuses. A class rather than an
    @asynccontextmanager: it runs on every call, and a generator-based one costs several
    microseconds more."""

    __slots__ = (
        "_access",
        "_caller",
        "_context",
        "_guard",
        "_instance",
        "_request",
        "_streaming",
        "_watch",
    )

    def __init__(
        self,
        guard: CallGuard,
        access: MethodAccess,
        request: Any,
        context: Context,
        streaming: bool,
    ) -> None:
        self._guard, self._access, self._request, self._context = guard, access, request, context
        self._streaming = streaming
        self._caller: Token[Caller] | None = None
        self._instance: InstanceToken | None = None
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        try:
            key, caller = await self._guard.caller_of(self._context)
            # Every service (and the access check) sees instance ids in lower case (the
            # ids are case-insensitive).
            normalize_instance_ids(self._request)
            self._access.check(caller, self._request)
        except Exception as error:
            await self._fail(error)
            raise
        if self._streaming and (call := asyncio.current_task()) is not None:
            self._watch = asyncio.create_task(
                self._guard.watch_key(key, caller, self._context, call)
            )
        self._caller = enter_caller(caller)
        tenant = caller.tenant
        log.debug("call started: %s (tenant %s)", self._access.method, tenant)
        # Lines logged for a call naming an instance concern that instance.
        instance_id = getattr(self._request, "instance_id", "")
        if isinstance(instance_id, str) and instance_id:
            self._instance = enter_instance(tenant, instance_id)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._instance is not None:
            leave_instance(self._instance)
        if self._caller is not None:
            leave_caller(self._caller)
        if isinstance(error, Exception):
            await self._fail(error)

    async def _fail(self, error: Exception) -> None:
        """Ends the call with the error's status (aborting raises grpc.aio.AbortError)."""
        if isinstance(error, ZapgateError):
            await _abort(self._context, error)
        elif isinstance(error, EngineError):
            await _abort(self._context, from_engine(error))
        elif (busy := from_busy_store(error)) is not None:
            log.warning("%s: %s", self._access.method, error)
            await _abort(self._context, busy)
        elif not isinstance(error, grpc.aio.AbortError):
            log.error("unhandled error in %s", self._access.method, exc_info=error)
            await _abort(self._context, ZapgateError("internal error; see the server log"))


async def _abort(context: Context, error: ZapgateError) -> None:
    status = error.to_status()
    await context.abort(
        error.code,
        error.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )
