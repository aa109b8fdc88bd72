"""Serves each gRPC method handler, exactly as the gRPC server runs it (call guard, metrics
observer and servicer), as a connect-python endpoint: one service code, one auth, one error
model. The Connect runtime decodes the request and frames the answer; this module only hands
the decoded message to the handler with a context that reads the HTTP headers as metadata and
turns an abort (call_guard.py attaches the `google.rpc.Status`) into a ConnectError whose
details are that status's details."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.rpc import status_pb2

from zapgate.gateway.rpc.call_guard import STATUS_DETAILS_KEY
from zapgate.gateway.rpc.handlers import GenericHandler, Handler

Metadata = tuple[tuple[str, str | bytes], ...]
# gRPC's codes by name; Connect spells CANCELLED with one L.
CODES: dict[grpc.StatusCode, Code] = {
    status: Code[status.name.replace("CANCELLED", "CANCELED")]
    for status in grpc.StatusCode
    if status is not grpc.StatusCode.OK
}


class HandlerCallDetails(grpc.HandlerCallDetails):
    """What a generic handler needs to find a method's handler."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class MethodHandlers:
    """Collects the (already wrapped) generic handlers services register on the gRPC server,
    and finds the one serving a method."""

    def __init__(self) -> None:
        self._generic: list[GenericHandler] = []

    def add(self, handlers: Iterable[GenericHandler]) -> None:
        self._generic.extend(handlers)

    def find(self, method: str) -> Handler | None:
        details = HandlerCallDetails(method)
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


class Aborted(grpc.aio.AbortError):
    """What `abort` raises, as grpc.aio's does: the call guard knows the call has ended."""


class HttpServicerContext:
    """The part of grpc.aio.ServicerContext zapgate's handlers use, over one HTTP call."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx
        self._metadata: Metadata = tuple(ctx.request_headers().allitems())
        self._code: grpc.StatusCode | None = None
        self.error: ConnectError | None = None

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        # Sent with the response headers (for a stream: with its first message).
        for key, value in metadata:
            self._ctx.response_headers()[key] = (
                value if isinstance(value, str) else value.decode("latin-1")
            )

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> None:
        self._code = code
        self.error = connect_error(code, details, trailing_metadata)
        raise Aborted()

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def peer(self) -> str:
        return self._ctx.client_address() or ""


def connect_error(code: grpc.StatusCode, message: str, trailing: Metadata) -> ConnectError:
    """The gRPC status as a Connect error: same code, message and `google.rpc` details."""
    details: Sequence[Any] = ()
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details = status_pb2.Status.FromString(value).details
    return ConnectError(CODES[code], message, details)


def _ended(context: HttpServicerContext, error: BaseException) -> ConnectError | None:
    """The Connect error a call ended with: the abort's, if it aborted."""
    if isinstance(error, grpc.aio.AbortError):
        return context.error or ConnectError(Code.INTERNAL, "internal error; see the server log")
    if isinstance(error, asyncio.CancelledError) and context.error is not None:
        # Aborted from beside the handler (a stream whose API key was revoked), which was
        # then cancelled: answer with the abort's status instead of a cancellation.
        if (task := asyncio.current_task()) is not None:
            task.uncancel()
        return context.error
    return None


def unary(handler: Handler) -> Any:
    call: Any = handler.unary_unary

    async def serve(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        context = HttpServicerContext(ctx)
        try:
            return await call(request, context)
        except BaseException as error:
            if (ended := _ended(context, error)) is not None:
                raise ended from None
            raise

    return serve


def server_stream(handler: Handler) -> Any:
    call: Any = handler.unary_stream

    async def serve(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        context = HttpServicerContext(ctx)
        try:
            async for item in call(request, context):
                yield item
        except BaseException as error:
            if (ended := _ended(context, error)) is not None:
                raise ended from None
            raise

    return serve


class ServiceAdapter:
    """Stands for a generated `*_connect.py` service protocol: attribute `create_instance`
    is the handler of `/zapgate.v1.InstanceService/CreateInstance`, served as above.
    Names are matched without case or underscores, so the generator's snake case is not
    re-derived here."""

    def __init__(self, service: str, methods: Iterable[str], handlers: MethodHandlers) -> None:
        self._service = service
        self._methods = {name.lower(): name for name in methods}
        self._handlers = handlers

    def __getattr__(self, attribute: str) -> Any:
        name = self._methods.get(attribute.replace("_", "").lower())
        if name is None:
            raise AttributeError(attribute)
        method = f"/{self._service}/{name}"
        handler = self._handlers.find(method)
        if handler is None:
            raise LookupError(f"{method} is not registered on the gRPC server")
        if handler.unary_unary is not None:
            return unary(handler)
        if handler.unary_stream is not None:
            return server_stream(handler)
        raise LookupError(f"{method}: only unary and server-streaming methods are served")
