"""Wraps gRPC method handlers of any arity in a per-call async scope (authentication in
call_guard.py, call metrics in rpc_observer.py), once per method when services register
(`WrappingRegistrar`). A grpc.aio server interceptor would do the same per call: even one
that only awaits its continuation costs about 30 µs of CPU per call (bench/enqueue_breakdown.py),
more than a tenth of a whole bare unary call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias, cast

import grpc
import grpc.aio

# Called with the request (None for client streams) and the call's context.
CallScope = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


# Generic only in the type stubs, not at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# Given a method's full name ("/package.Service/Method") and handler, the handler to serve.
Wrap = Callable[[str, Handler], Handler]
GenericHandler: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"


def wrap_handler(handler: Handler, scope: CallScope) -> Handler:
    """Returns a handler that runs the original behaviour inside `scope(context)`."""
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    # The stubs type behaviours as synchronous; on a grpc.aio server they are coroutines or
    # async generators, so they are typed Any here.
    if handler.unary_unary is not None:
        unary_unary: Any = handler.unary_unary

        async def call_unary_unary(request: Any, context: Any) -> Any:
            async with scope(request, context):
                return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(call_unary_unary, **codecs)
    if handler.unary_stream is not None:
        unary_stream: Any = handler.unary_stream

        async def call_unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            async with scope(request, context):
                async for item in unary_stream(request, context):
                    yield item

        return grpc.unary_stream_rpc_method_handler(call_unary_stream, **codecs)
    if handler.stream_unary is not None:
        stream_unary: Any = handler.stream_unary

        async def call_stream_unary(requests: Any, context: Any) -> Any:
            async with scope(None, context):
                return await stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(call_stream_unary, **codecs)
    stream_stream: Any = handler.stream_stream

    async def call_stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        async with scope(None, context):
            async for item in stream_stream(requests, context):
                yield item

    return grpc.stream_stream_rpc_method_handler(call_stream_stream, **codecs)


class WrappingRegistrar:
    """Stands in for the server while services register (generated `add_*_to_server`
    functions, health, reflection), wrapping every method handler by each of `wraps`, the
    first outermost. Anything else is the server's."""

    def __init__(self, server: grpc.aio.Server, wraps: Sequence[Wrap]) -> None:
        self._server = server
        self._wraps = list(reversed(wraps))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def wrap(self, method: str, handler: Handler) -> Handler:
        for wrap in self._wraps:
            handler = wrap(method, handler)
        return handler

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        """Not passed on: every method is served through its generic handler instead. For
        each registered method a grpc.aio server keeps a call request pending, and after
        every call it waits again on all of them (one `asyncio.wait` over ~37 futures per
        call here: about 9% of the event loop's time under load)."""

    def add_generic_rpc_handlers(self, generic_handlers: Sequence[GenericHandler]) -> None:
        # Generated code registers each method here too; these are looked up per call.
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGeneric(handler, WrapperCache(self.wrap)) for handler in generic_handlers)
        )


def registrar(server: grpc.aio.Server, wraps: Sequence[Wrap]) -> grpc.aio.Server:
    """The server as services should see it while they register (typed as the server: the
    registration functions take one, and it forwards everything it does not wrap)."""
    return cast(grpc.aio.Server, WrappingRegistrar(server, wraps))


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, inner: GenericHandler, wrappers: WrapperCache) -> None:
        self._inner = inner
        self._wrappers = wrappers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._wrappers.get(handler_call_details.method, handler)


class WrapperCache:
    """Per method: the handler last wrapped and its wrapper."""

    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler) -> Handler:
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        return cached[1]
