"""A TCP proxy between one node and PostgreSQL that a test can cut, to partition that node
from the database while every other node still reaches it.

Cut, the proxy behaves like a network partition, not like a refusing server: bytes stop
flowing both ways on the open connections and new connections are accepted but never
answered, so the node sees hanging queries, not errors. Healed, the connections that hung
through the cut are closed (as TCP would after the partition's timeouts) and new ones flow.

Each proxy runs in a process of its own (`ProxyProcess`), so a busy test process never
slows the nodes' database traffic down: SIGUSR1 cuts it, SIGUSR2 heals it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys


class PgProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[asyncio.StreamWriter] = set()  # both ends of every open connection
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0
        self.cuts = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def is_cut(self) -> bool:
        return not self._flowing.is_set()

    def cut(self) -> None:
        self.cuts += 1
        self._flowing.clear()

    def heal(self) -> None:
        """The partition ends: connections that lived through it are dead, new ones flow."""
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.heal()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        self._links.add(client)
        try:
            await self._flowing.wait()  # a connection opened during a cut hangs unanswered
            server_reader, server = await asyncio.open_connection(*self._target)
        except (OSError, asyncio.CancelledError):
            client.transport.abort()
            self._links.discard(client)
            return
        if client not in self._links:  # healed meanwhile: this connection died in the cut
            server.transport.abort()
            return
        self._links.add(server)
        for reader, writer in ((client_reader, server), (server_reader, client)):
            pump = asyncio.create_task(self._pump(reader, writer, (client, server)))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ends: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # during a cut, bytes stall here
                if writer not in self._links:
                    break  # healed: this connection did not survive the cut
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            for end in ends:
                self._links.discard(end)
                with contextlib.suppress(Exception):
                    end.transport.abort()


def through(database_url: str, port: int) -> str:
    """`database_url` with its host and port replaced by the proxy's."""
    scheme, _, rest = database_url.partition("://")
    credentials, _, location = rest.rpartition("@")
    _, _, database = location.partition("/")
    return f"{scheme}://{credentials}@127.0.0.1:{port}/{database}"


class ProxyProcess:
    """A PgProxy in a child process, for one node."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.pg_proxy", target_host, str(target_port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.is_cut = False
        self.cuts = 0

    def url_for(self, database_url: str) -> str:
        return through(database_url, self.port)

    def cut(self) -> None:
        self.process.send_signal(signal.SIGUSR1)
        self.is_cut = True
        self.cuts += 1

    def heal(self) -> None:
        self.process.send_signal(signal.SIGUSR2)
        self.is_cut = False

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


async def serve(target_host: str, target_port: int) -> None:
    proxy = PgProxy(target_host, target_port)
    await proxy.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    loop.add_signal_handler(signal.SIGUSR2, proxy.heal)
    print(proxy.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
