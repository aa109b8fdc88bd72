"""`zapgate simulated-whatsapp` as a real child process, for tests that run several gateways
(or nodes) against one simulated WhatsApp, and the reads of its record:

    with simulated_whatsapp(tmp_path / "simwa") as whatsapp:
        node = ServerProcess(data_dir, "--engine", "sim", *whatsapp.flags())
        ...
        assert await whatsapp.replacements() == []          # never two owners
        assert all(d.duplicates == 0 for d in await whatsapp.devices())
        whatsapp.kill()   # kill -9; whatsapp.start() brings it back on the same port
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc.aio

from zapgate.engine.v1 import simwa_pb2 as pb
from zapgate.engine.v1 import simwa_pb2_grpc
from zapgate.sessions.sim_phone import Received
from zapgate.sessions.simwa_client import list_received

LISTENING = re.compile(r"simulated WhatsApp listening on [\d.]+:(\d+)")
HANG_GUARD = 30.0  # only against hangs: nothing asserts a duration


class SimulatedWhatsApp:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def flags(self) -> tuple[str, str]:
        """What `zapgate serve --engine sim` needs to attach to this server."""
        return ("--sim-server", self.address)

    def start(self) -> None:
        """Starts the server (again: on the port it had, so gateways find it back)."""
        log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        offset = log_file.stat().st_size if log_file.exists() else 0
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zapgate.gateway.cli",
                    "simulated-whatsapp",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--data",
                    str(self.data_dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            text = log_file.read_bytes()[offset:].decode(errors="replace")
            if match := LISTENING.search(text):
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"simulated WhatsApp did not start:\n{text}")

    def kill(self) -> None:
        """kill -9: what it had answered must survive (its record and phones are durable)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=HANG_GUARD)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def replacements(self) -> list[pb.StreamReplacement]:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = simwa_pb2_grpc.SimulatedWhatsAppServiceStub(channel)
            answer = await stub.ListStreamReplacements(pb.ListStreamReplacementsRequest())
        return list(answer.replacements)

    async def devices(self) -> list[pb.DeviceCounters]:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = simwa_pb2_grpc.SimulatedWhatsAppServiceStub(channel)
            answer = await stub.ListDevices(pb.ListDevicesRequest())
        return list(answer.devices)

    async def received(self, device_jid: str) -> list[Received]:
        return await list_received(self.address, device_jid)


@contextmanager
def simulated_whatsapp(data_dir: Path) -> Iterator[SimulatedWhatsApp]:
    server = SimulatedWhatsApp(data_dir)
    try:
        yield server
    finally:
        server.close()
