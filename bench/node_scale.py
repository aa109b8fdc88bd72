"""One node at scale: N paired simulator instances restored and connected on one gateway
(a process of its own, as `zapgate serve` runs it), then

- the core's RSS per hosted instance: the node's RSS minus that of the same node started
  with no instances (the baseline, measured in the same run);
- idle CPU of the core and of its engine workers over a window, once every instance is
  connected and the contact syncs after the connects are over;
- CPU while the node sends a steady total rate of messages (round robin over the
  instances, each well inside the default send policy), and how many went out.

    python bench/node_scale.py [--instances 10000] [--workers 2] [--idle-seconds 30]
        [--send-rate 200] [--send-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import grpc.aio
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ helpers
from restore_sessions import seeded

from tests.processes import child_pids
from zapgate.gateway.config import ServeConfig
from zapgate.gateway.connections.backoff import Backoff
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.schema import events, instances, messages
from zapgate.sessions.sim_engine import SimTimings
from zapgate.v1 import event_pb2, message_pb2, message_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb

TICK = os.sysconf("SC_CLK_TCK")


# ---- the node: a gateway in a process of its own ------------------------------------------


async def serve_node(data_dir: Path, runtime_dir: Path, workers: int, port_file: Path) -> None:
    config = ServeConfig(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'zapgate.db'}",
        engine="sim",
        engine_workers=workers,
        runtime_dir=runtime_dir,
        sim_timings=SimTimings(connect_seconds=0.05),
        backoff=Backoff(0.2, 2.0),
        contacts_sync_delay_seconds=2.0,  # over before the idle window starts
    )
    gateway = Gateway(config)
    await gateway.start()
    port_file.write_text(str(gateway.port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await gateway.stop(grace=1)


# ---- measuring it from outside --------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


class Node:
    def __init__(self, data_dir: Path, runtime_dir: Path, workers: int) -> None:
        self.data_dir, self.runtime_dir, self.workers = data_dir, runtime_dir, workers
        self.port_file = data_dir.parent / "port"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> int:
        self.port_file.unlink(missing_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            str(self.data_dir),
            str(self.runtime_dir),
            str(self.workers),
            str(self.port_file),
        )
        while not self.port_file.exists():
            if self.process.returncode is not None:
                raise RuntimeError("the node exited at start")
            await asyncio.sleep(0.1)
        return int(self.port_file.read_text())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return child_pids(self.pid)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: the core's, and its workers' together."""
        return cpu_seconds(self.pid), sum(cpu_seconds(p) for p in self.worker_pids())

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await self.process.wait()


async def scalar(url: str, query: sa.Select[tuple[int]]) -> int:
    engine = await open_database(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(query) or 0)
    finally:
        await engine.dispose()


def count_where(table: sa.Table, *conditions: sa.ColumnElement[bool]) -> sa.Select[tuple[int]]:
    return sa.select(sa.func.count()).select_from(table).where(*conditions)


async def wait_for(url: str, query: sa.Select[tuple[int]], target: int, limit: float) -> float:
    start = time.perf_counter()
    while await scalar(url, query) < target:
        if time.perf_counter() - start > limit:
            raise TimeoutError(f"not reached in {limit:.0f} s: {await scalar(url, query)}")
        await asyncio.sleep(0.5)
    return time.perf_counter() - start


async def idle_cpu(node: Node, seconds: float) -> tuple[float, float]:
    core, workers = node.cpu()
    await asyncio.sleep(seconds)
    core_after, workers_after = node.cpu()
    return (core_after - core) / seconds, (workers_after - workers) / seconds


async def send_steadily(
    port: int, api_key: str, count: int, rate: float, seconds: float
) -> tuple[int, collections.Counter[str]]:
    """SendMessage at `rate` per second in all, round robin over the instances; returns
    how many were accepted, and the status codes of the refused ones."""
    metadata = (("authorization", f"Bearer {api_key}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        start = time.perf_counter()
        calls: list[asyncio.Future[object]] = []
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            request = message_pb2.SendMessageRequest(
                instance_id=f"i{n % count:05d}",
                phone=f"+5521{n:09d}",
                text=message_pb2.Text(body=f"hello {n}"),
            )
            calls.append(asyncio.ensure_future(stub.SendMessage(request, metadata=metadata)))
        results = await asyncio.gather(*calls, return_exceptions=True)
    refused = collections.Counter(
        result.code().name if isinstance(result, grpc.aio.AioRpcError) else type(result).__name__
        for result in results
        if isinstance(result, BaseException)
    )
    return len(results) - sum(refused.values()), refused


async def run(args: argparse.Namespace) -> None:
    count = args.instances
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir=shm) as runtime,
    ):
        # The baseline: the same node hosting nothing.
        empty = Path(tmp) / "empty" / "data"
        empty.mkdir(parents=True, mode=0o700)
        base_node = Node(empty, Path(runtime) / "empty", args.workers)
        await base_node.start()
        await asyncio.sleep(args.settle_seconds)
        base_rss = rss_kib(base_node.pid)
        base_workers_rss = sum(rss_kib(p) for p in base_node.worker_pids())
        base_core, base_workers = await idle_cpu(base_node, args.idle_seconds)
        await base_node.stop()
        print(
            f"baseline (no instances): core RSS {base_rss / 1024:.1f} MiB, workers "
            f"{base_workers_rss / 1024:.1f} MiB; idle CPU core {base_core:.1%}, "
            f"workers {base_workers:.1%} of one core",
            flush=True,
        )

        data = Path(tmp) / "node" / "data"
        started = time.perf_counter()
        shutil.copytree(await seeded(count), data)  # on disk, as in production
        url = f"sqlite+aiosqlite:///{data / 'zapgate.db'}"
        engine = await open_database(url)
        api_key, _ = await ApiKeyRepository(engine).create("bench", "node_scale")
        await engine.dispose()
        print(f"seeded {count} sessions in {time.perf_counter() - started:.0f} s", flush=True)

        node = Node(data, Path(runtime) / "node", args.workers)
        started = time.perf_counter()
        port = await node.start()
        connected = count_where(instances, instances.c.state == ipb.INSTANCE_STATE_CONNECTED)
        await wait_for(url, connected, count, limit=1800)
        restored = time.perf_counter() - started
        synced = count_where(events, events.c.type == event_pb2.EVENT_TYPE_CONTACTS_SYNCED)
        await wait_for(url, synced, count, limit=1800)
        # The syncs changed every store (the simulator keeps contacts in it; whatsmeow
        # writes its store after a connect too): the keeper snapshots them all once. The
        # node is idle when that wave is written (generation 2 of every session).
        resealed = count_where(instances, instances.c.session_generation >= 2)
        with contextlib.suppress(TimeoutError):
            await wait_for(url, resealed, count, limit=1800)
        settled = time.perf_counter() - started
        await asyncio.sleep(args.settle_seconds)
        rss = rss_kib(node.pid)
        workers_rss = [rss_kib(p) for p in node.worker_pids()]
        print(
            f"{count} instances: all CONNECTED {restored:.1f} s after the node's start, contact "
            f"syncs and the snapshots they caused over after {settled:.1f} s; core RSS {rss / 1024:.1f} MiB = "
            f"{(rss - base_rss) / count:.1f} KiB per instance over the baseline (target 50); "
            f"workers RSS {sum(workers_rss) / 1024:.1f} MiB "
            f"({(sum(workers_rss) - base_workers_rss) / count:.1f} KiB per instance); "
            f"core threads {threads(node.pid)}; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        core, workers = await idle_cpu(node, args.idle_seconds)
        print(
            f"idle {args.idle_seconds:.0f} s: CPU core {core:.1%}, workers {workers:.1%} of one "
            f"core (target 5%; baseline core {base_core:.1%}, workers {base_workers:.1%}); "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if args.profile_idle:
            # After the measured window, never during it: py-spy stops the process for
            # every sample, which costs the process itself CPU (at 2,000 idle instances
            # 3.3% of a core against 0.2% unprofiled, same node, same minute).
            profiler = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-f", "raw", "-o", args.profile_idle,
                "-d", str(int(args.idle_seconds)), "-p", str(node.pid),
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await profiler.wait()
        if args.send_seconds <= 0:
            await node.stop()
            return
        cpu_before = node.cpu()
        sent_before = await scalar(
            url, count_where(messages, messages.c.state >= message_pb2.MESSAGE_STATE_SENT)
        )
        started = time.perf_counter()
        accepted, refused = await send_steadily(
            port, api_key, count, args.send_rate, args.send_seconds
        )
        elapsed = time.perf_counter() - started
        cpu_after = node.cpu()
        went_out = count_where(messages, messages.c.state >= message_pb2.MESSAGE_STATE_SENT)
        sent = await scalar(url, went_out) - sent_before
        # The last ones are still typing (the default policy shows typing first).
        with contextlib.suppress(TimeoutError):
            await wait_for(url, went_out, sent_before + accepted, limit=args.drain_seconds)
        drained = await scalar(url, went_out) - sent_before
        print(
            f"sending {args.send_rate:.0f}/s for {args.send_seconds:.0f} s: {accepted} accepted, "
            f"refused: {dict(refused) or 'none'}, {sent} sent by the end ({sent / elapsed:.0f}/s), {drained} "
            f"{args.drain_seconds:.0f} s later; CPU core "
            f"{(cpu_after[0] - cpu_before[0]) / elapsed:.1%}, workers "
            f"{(cpu_after[1] - cpu_before[1]) / elapsed:.1%} of one core; "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        await node.stop()
        shutil.rmtree(Path(runtime), ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        logging.basicConfig(level=logging.ERROR)
        data_dir, runtime_dir, workers, port_file = sys.argv[2:6]
        asyncio.run(serve_node(Path(data_dir), Path(runtime_dir), int(workers), Path(port_file)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--send-rate", type=float, default=200.0)
    parser.add_argument("--send-seconds", type=float, default=30.0)
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument("--profile-idle", help="py-spy the core while idle, to this file")
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
