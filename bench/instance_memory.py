"""Memory and threads per hosted instance: RSS and OS threads of one engine worker process
before and after it hosts N instances, for the simulator (paired sessions, connected) and for neonize offline (the real
library creates and migrates each store and dials; without a network every dial fails, so
its figure is the memory a worker keeps after N clients were set up, not of live sockets).

    python bench/instance_memory.py [--engines sim,neonize] [--counts 1,50,200,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import grpc.aio

from zapgate.engine.v1 import worker_pb2 as pb
from zapgate.engine.v1 import worker_pb2_grpc
from zapgate.sessions import events, wire
from zapgate.sessions.sim_store import SimStore

SETTLED = {"sim": (events.Connected,), "neonize": (events.ConnectFailed, events.QrShown)}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


async def measure(engine: str, count: int) -> tuple[int, int, int]:
    """(RSS growth in KiB, threads added, instances hosted at the end)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        socket = Path(tmp) / "worker.sock"
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zapgate.sessions.worker",
            "--socket",
            str(socket),
            "--engine",
            engine,
            "--sim-timings",
            '{"connect_seconds": 0.0}',
            "--log-level",
            "WARNING",
            stdout=asyncio.subprocess.DEVNULL,
        )
        try:
            while not socket.exists():
                await asyncio.sleep(0.02)
            async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
                stub = worker_pb2_grpc.EngineWorkerServiceStub(channel)
                await stub.Ping(pb.PingRequest())
                stream = stub.StreamEvents(pb.StreamEventsRequest())
                await asyncio.sleep(0.5)
                before, threads_before = rss_kib(worker.pid), threads(worker.pid)
                for n in range(count):
                    runtime = Path(tmp) / f"i{n}"
                    if engine == "sim":  # a paired session: it connects and stays hosted
                        store = SimStore(runtime / "session.db")
                        store.load_or_create()
                        store.save_pairing(f"5511{n:09d}:1@s.whatsapp.net", f"+5511{n:09d}")
                    await stub.StartInstance(
                        pb.StartInstanceRequest(
                            key=f"bench/i{n}", runtime_dir=str(runtime), run_id=n + 1
                        )
                    )
                settled: set[str] = set()
                async for message in stream:
                    event = wire.decode(message.event_json)
                    if isinstance(event, SETTLED[engine]):
                        settled.add(event.key)
                    if len(settled) == count:
                        break
                await asyncio.sleep(0.5)
                after, threads_after = rss_kib(worker.pid), threads(worker.pid)
                hosted = (await stub.Ping(pb.PingRequest())).hosted
        finally:
            worker.terminate()
            await worker.wait()
    return after - before, threads_after - threads_before, hosted


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sim,neonize")
    parser.add_argument("--counts", default="1,50,200,1000")
    args = parser.parse_args()
    for engine in args.engines.split(","):
        for count in (int(c) for c in args.counts.split(",")):
            delta, added_threads, hosted = await measure(engine, count)
            print(
                f"{engine:8} {count:4} instances: RSS +{delta / 1024:7.1f} MiB "
                f"= {delta / count:8.1f} KiB per instance; +{added_threads} threads "
                f"({added_threads / count:.2f} per instance); hosted at the end: {hosted}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
