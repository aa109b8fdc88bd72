"""Runs the HTTP application on Hypercorn (HTTP/1.1, and HTTP/2 over cleartext: prior
knowledge or an h2c upgrade), from the gateway's own event loop, supervised.

The listening socket is bound here once, so the port is known at start (even for port 0)
and stays the same if Hypercorn has to be started again after a failure: each run gets a
duplicate of it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl

from hypercorn.asyncio import serve
from hypercorn.config import Config

from zapgate.gateway.config import TlsConfig
from zapgate.gateway.http.asgi import App
from zapgate.gateway.ops.metrics_http import parse_listen
from zapgate.gateway.supervision import Supervision

log = logging.getLogger(__name__)

TASK_NAME = "http-server"


class HttpServer:
    def __init__(self, listen: str, app: App, tls: TlsConfig | None = None) -> None:
        self._host, self._port = parse_listen(listen, flag="--http-listen")
        self._app = app
        self._socket: socket.socket | None = None
        self._shutdown = asyncio.Event()
        self._supervision = Supervision()
        self._config = Config()
        self._config.errorlog = log  # Hypercorn's own lines, in the gateway's log
        self._config.accesslog = None
        if tls is not None:  # the gRPC port's certificate (and client CA) here too
            self._config.certfile = str(tls.cert_file)
            self._config.keyfile = str(tls.key_file)
            if tls.client_ca_file is not None:
                self._config.ca_certs = str(tls.client_ca_file)
                self._config.verify_mode = ssl.CERT_REQUIRED
        self.scheme = "https" if tls is not None else "http"

    @property
    def port(self) -> int:
        assert self._socket is not None, "start() first"
        return int(self._socket.getsockname()[1])

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._port))
            listener.listen(1024)
            listener.setblocking(False)
        except OSError as error:
            listener.close()
            raise OSError(
                f"--http-listen: cannot listen on {self._host}:{self._port} ({error.strerror}): "
                "give another address, or `--http-listen off`"
            ) from error
        self._socket = listener
        self._supervision.start(TASK_NAME, self._serve)

    async def _serve(self) -> None:
        assert self._socket is not None
        self._config.bind = [f"fd://{os.dup(self._socket.fileno())}"]
        await serve(self._app, self._config, shutdown_trigger=self._shutdown.wait)  # type: ignore[arg-type]

    async def stop(self, grace: float) -> None:
        """Stops accepting, lets calls in flight finish within `grace` seconds (open streams
        are cancelled after it). Safe to call twice."""
        self._config.graceful_timeout = grace
        self._shutdown.set()
        tasks = self._supervision.tasks()
        if tasks:
            await asyncio.wait(tasks, timeout=grace + 5)
        await self._supervision.stop()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
