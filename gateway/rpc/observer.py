"""The outermost handler wrapper, installed when metrics are served: counts and times
every call by method and final status code, and keeps the number of calls in progress (open
streams included)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

from zapgate.gateway.rpc.handlers import Handler, wrap_handler

# Seconds; streams (Connect, Subscribe) last far longer and land in +Inf.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RpcMetrics:
    """The call metrics, named as go-grpc-prometheus names them (dashboards exist for them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = PromCounter(
            "grpc_server_started", "Calls started.", labels, registry=registry
        )
        self.handled = PromCounter(
            "grpc_server_handled",
            "Calls finished, by final status code.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of a call to its end (for streams: how long they were open).",
            [*labels, "grpc_code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Calls in progress by full method name; read at scrape time (metrics.py).
        self.in_progress: Counter[str] = Counter()


class RpcObserver:
    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    def wrap(self, method: str, handler: Handler) -> Handler:
        return wrap_handler(handler, _Call(self._metrics, method, handler).observe)


class _Call:
    """What is known of a method before its calls come: labels and where to count them."""

    def __init__(self, metrics: RpcMetrics, method: str, handler: Handler) -> None:
        service, _, name = method.strip("/").rpartition("/")
        self.labels = (_kind(handler), service, name)
        self.method = method
        self.metrics = metrics
        self.started = metrics.started.labels(*self.labels)
        # By final code: (handled counter, latency histogram), resolved once.
        self._ended: dict[str, tuple[Any, Any]] = {}

    @asynccontextmanager
    async def observe(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        metrics = self.metrics
        self.started.inc()
        metrics.in_progress[self.method] += 1
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield
            code = _code_of(context) or grpc.StatusCode.OK
        except (asyncio.CancelledError, GeneratorExit):  # the client went away, or an abort
            code = _code_of(context) or grpc.StatusCode.CANCELLED  # from beside the handler
            raise
        except BaseException:
            # An abort set the code; anything else escaping the service is UNKNOWN to gRPC.
            code = _code_of(context) or grpc.StatusCode.UNKNOWN
            raise
        finally:
            metrics.in_progress[self.method] -= 1
            handled, seconds = self._series(_code_name(code))
            handled.inc()
            seconds.observe(time.perf_counter() - started)

    def _series(self, code: str) -> tuple[Any, Any]:
        series = self._ended.get(code)
        if series is None:
            labels = (*self.labels, code)
            series = self._ended[code] = (
                self.metrics.handled.labels(*labels),
                self.metrics.seconds.labels(*labels),
            )
        return series


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    """The code the service set or aborted with; None when it set none."""
    code: grpc.StatusCode | None = context.code()
    return code


def _code_name(code: Any) -> str:
    # grpc.aio reports the code as a StatusCode, or as its int value after some aborts.
    if isinstance(code, grpc.StatusCode):
        return code.name
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)


def _kind(handler: Handler) -> str:
    if handler.unary_unary is not None:
        return "unary"
    if handler.unary_stream is not None:
        return "server_stream"
    if handler.stream_unary is not None:
        return "client_stream"
    return "bidi_stream"
