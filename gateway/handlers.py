"""Wraps gRPC method handlers of any arity in a per-call async scope (see interceptor.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import grpc.aio

CallScope = Callable[[grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


def wrap_handler(handler: grpc.RpcMethodHandler, scope: CallScope) -> grpc.RpcMethodHandler:
    """Returns a handler that runs the original behaviour inside `scope(context)`."""
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def call_unary_unary(request: Any, context: Any) -> Any:
            async with scope(context):
                return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(call_unary_unary, **codecs)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def call_unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            async with scope(context):
                async for item in unary_stream(request, context):
                    yield item

        return grpc.unary_stream_rpc_method_handler(call_unary_stream, **codecs)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def call_stream_unary(requests: Any, context: Any) -> Any:
            async with scope(context):
                return await stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(call_stream_unary, **codecs)
    stream_stream = handler.stream_stream

    async def call_stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        async with scope(context):
            async for item in stream_stream(requests, context):
                yield item

    return grpc.stream_stream_rpc_method_handler(call_stream_stream, **codecs)
