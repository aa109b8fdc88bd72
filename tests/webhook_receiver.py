"""A real HTTP receiver for webhook tests, on loopback: a small asyncio HTTP/1.1 server that
records every request and answers what the test says (a status, or never)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# Called for each request; returns the status to answer, or None to never answer.
Responder = Callable[["Received"], Awaitable[int | None]]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def ok(_: Received) -> int:
    return 200


class Receiver:
    def __init__(self, respond: Responder = ok) -> None:
        self.respond = respond
        self.requests: list[Received] = []
        self.accepted: list[Received] = []  # answered 2xx
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stops listening and drops every open connection (the port is kept for `reopen`)."""
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def reopen(self) -> None:
        await self.__aenter__()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                status = await self.respond(request)
                if status is None:
                    await asyncio.Event().wait()  # never answers
                    return
                if 200 <= status < 300:
                    self.accepted.append(request)
                payload = b"received" if status < 300 else b"not now"
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def wait_accepted(self, count: int, timeout: float = 20) -> list[Received]:
        """Until `count` requests were accepted (the timeout only guards hangs)."""
        await self.wait_until(lambda: len(self.accepted) >= count, timeout)
        return self.accepted

    async def wait_until(self, done: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not done after {timeout}s; accepted {len(self.accepted)}")
            await asyncio.sleep(0.01)


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    line = await reader.readline()
    if not line:
        return None
    path = line.decode().split(" ")[1]
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(path, headers, body)
