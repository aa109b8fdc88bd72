"""Serves `GET /metrics` on `--metrics-listen` from the gateway's own event loop.

Not prometheus_client's `start_http_server`: that answers from a thread of its own, and the
collectors read the gateway's live state (supervisor, scheduler, pool), which only the event
loop may touch. One request per connection, HTTP/1.1 `Connection: close`: all a Prometheus
scrape needs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
REQUEST_TIMEOUT_SECONDS = 10.0
METRICS_PATHS = ("/metrics", "/")


def parse_listen(listen: str, flag: str = "--metrics-listen") -> tuple[str, int]:
    """`host:port`, `[v6]:port`, or a bare port (then loopback only)."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, listen
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{flag}: {listen!r} is not host:port")
    return host, int(port)


class MetricsServer:
    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        before_scrape: Callable[[], Awaitable[None]],
    ) -> None:
        self._host, self._port = parse_listen(listen)
        self._registry = registry
        self._before_scrape = before_scrape
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            status, content_type, body = await self._answer(head)
            send_body = not head.startswith(b"HEAD ")
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (body if send_body else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that went away or never finished its request
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        method, _, rest = head.decode("latin-1").partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
        if path not in METRICS_PATHS:
            return "404 Not Found", "text/plain", b"metrics are at /metrics\n"
        await self._before_scrape()
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
