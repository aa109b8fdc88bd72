"""Wraps gRPC method handlers of any arity in a per-call async scope (interceptor.py,
rpc_observer.py). A method's handler is the same object for every call, so interceptors
wrap it once and reuse the wrapper (`WrapperCache`): wrapping per call costs a closure and a
handler tuple each time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import grpc
import grpc.aio

# Called with the request (None for client streams) and the call's context.
CallScope = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


# Generic only in the type stubs, not at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


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


class WrapperCache:
    """Per method: the handler last wrapped and its wrapper."""

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler) -> Handler:
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        return cached[1]
