"""One HTTP POST of a webhook: to the checked address (address_guard), with the URL's host in
`Host` and in TLS's SNI and certificate check, a timeout, no redirects followed, and at most
a snippet of the answer read."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from zapgate.gateway.webhooks.address_guard import AddressRefused, resolve

SNIPPET_BYTES = 1024
SNIPPET_CHARS = 200


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer (see error)
    body: str  # the answer's first characters
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        if self.error:
            return self.error
        return f"HTTP {self.status}: {self.body}" if self.body else f"HTTP {self.status}"


def new_client(max_connections: int, timeout_seconds: float) -> httpx.AsyncClient:
    # TCP_NODELAY: httpx writes a request's head and body separately; with Nagle's algorithm
    # the body waits for the receiver's delayed ACK of the head (40 ms on Linux) each time.
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_connections=max_connections),
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_seconds),
        trust_env=False,  # no proxy from the environment: addresses are checked here
    )


class Poster:
    def __init__(self, client: httpx.AsyncClient, allow_private: bool) -> None:
        self._client = client
        self._allow_private = allow_private

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            target, extra_headers, extensions = await self._target(url)
            request = self._client.build_request(
                "POST",
                target,
                content=body,
                headers=headers | extra_headers,
                extensions=extensions,
            )
            response = await self._client.send(request, stream=True)
            try:
                snippet = b""
                async for chunk in response.aiter_raw():
                    snippet += chunk
                    if len(snippet) >= SNIPPET_BYTES:
                        break
            finally:
                await response.aclose()
        except AddressRefused as error:
            return Answer(0, "", time.perf_counter() - started, str(error))
        except httpx.TimeoutException:
            return Answer(0, "", time.perf_counter() - started, "timed out")
        except (httpx.HTTPError, OSError) as error:
            detail = str(error) or type(error).__name__
            return Answer(0, "", time.perf_counter() - started, f"request failed: {detail}")
        text = snippet.decode("utf-8", "replace")[:SNIPPET_CHARS]
        return Answer(response.status_code, text, time.perf_counter() - started)

    async def _target(self, url: str) -> tuple[str, dict[str, str], dict[str, object]]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await resolve(host, port, self._allow_private)
        literal = f"[{address}]" if ":" in address else address
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = parts.netloc.rpartition("@")[2]
        extensions: dict[str, object] = {"sni_hostname": host} if parts.scheme == "https" else {}
        return target, {"host": host_header}, extensions
