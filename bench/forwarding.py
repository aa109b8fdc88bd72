"""What forwarding costs: an owner-bound call (GetInstanceStats, which reads the owner's
scheduler) made on the node that does not own the instance, forwarded to the owner, against
the same call made on the owner directly, in the same run. Two cluster nodes in this
process on one PostgreSQL database (the simulator engine), one paired instance owned by
node a; sequential calls (latency) and concurrent callers (throughput).

    python bench/forwarding.py --database-url postgresql://... [--calls 2000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc.aio

from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.config import ServeConfig
from zapgate.gateway.connections.master_key import write_key_file
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.sessions.sim_engine import SimTimings
from zapgate.sessions.vault import MasterKey
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import instance_pb2_grpc, simulator_pb2, simulator_pb2_grpc

SECRET = "bench-cluster-secret-0123456789"
FAST_SIM = SimTimings(qr_first_seconds=5.0, qr_next_seconds=5.0, connect_seconds=0.02)


def node(root: Path, url: str, name: str, key_file: Path) -> Gateway:
    return Gateway(
        ServeConfig(
            listen="127.0.0.1:0",
            data_dir=root / name / "data",
            runtime_dir=root / name / "runtime",
            database_url=url,
            engine="sim",
            engine_workers=1,
            sim_timings=FAST_SIM,
            master_key_file=key_file,
            cluster=ClusterSettings(node_id=name, lease_ttl_seconds=30.0, secret=SECRET),
        )
    )


async def pair(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
    instances = instance_pb2_grpc.InstanceServiceStub(channel)
    sim = simulator_pb2_grpc.SimulatorServiceStub(channel)
    await instances.CreateInstance(pb.CreateInstanceRequest(instance_id="i0"), metadata=metadata)
    async for update in instances.Connect(pb.ConnectRequest(instance_id="i0"), metadata=metadata):
        if update.HasField("qr_code"):
            scan = simulator_pb2.ScanQrRequest(
                instance_id="i0", code=update.qr_code.code, phone="+5511900000001"
            )
            await sim.ScanQr(scan, metadata=metadata)
        if update.HasField("result"):
            assert update.result.outcome == pb.CONNECT_OUTCOME_CONNECTED, update.result
            return


async def sequential(
    stub: instance_pb2_grpc.InstanceServiceStub, metadata: object, calls: int
) -> list[float]:
    request = pb.GetInstanceStatsRequest(instance_id="i0")
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        await stub.GetInstanceStats(request, metadata=metadata)
        took.append(time.perf_counter() - started)
    return took


async def concurrent(
    stub: instance_pb2_grpc.InstanceServiceStub, metadata: object, calls: int, callers: int
) -> float:
    """Calls per second with `callers` in flight."""
    request = pb.GetInstanceStatsRequest(instance_id="i0")

    async def caller() -> None:
        for _ in range(calls // callers):
            await stub.GetInstanceStats(request, metadata=metadata)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return (calls // callers * callers) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.database_url or not args.database_url.startswith("postgresql"):
        raise SystemExit("cluster mode needs PostgreSQL: --database-url postgresql://...")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        key_file = root / "master.key"
        write_key_file(key_file, MasterKey.generate())
        a, b = (
            node(root, args.database_url, "a", key_file),
            node(root, args.database_url, "b", key_file),
        )
        await a.start()
        await b.start()
        database = await open_database(args.database_url)
        key, _ = await ApiKeyRepository(database).create("bench")
        await database.dispose()
        metadata = (("authorization", f"Bearer {key}"),)
        owner = grpc.aio.insecure_channel(f"127.0.0.1:{a.port}")
        other = grpc.aio.insecure_channel(f"127.0.0.1:{b.port}")
        try:
            await pair(owner, metadata)
            on_owner = instance_pb2_grpc.InstanceServiceStub(owner)
            forwarded = instance_pb2_grpc.InstanceServiceStub(other)
            await sequential(on_owner, metadata, 200)  # warm up both paths
            await sequential(forwarded, metadata, 200)
            rows = []
            for _ in range(args.rounds):
                direct_lat = statistics.median(await sequential(on_owner, metadata, args.calls))
                fwd_lat = statistics.median(await sequential(forwarded, metadata, args.calls))
                direct_rate = await concurrent(on_owner, metadata, args.calls, args.concurrency)
                fwd_rate = await concurrent(forwarded, metadata, args.calls, args.concurrency)
                rows.append((direct_lat, fwd_lat, direct_rate, fwd_rate))
                print(
                    f"  round: latency direct {direct_lat * 1e3:.2f} ms, forwarded {fwd_lat * 1e3:.2f} ms "
                    f"(x{fwd_lat / direct_lat:.2f}); {args.concurrency} callers: direct {direct_rate:.0f}/s, "
                    f"forwarded {fwd_rate:.0f}/s (x{direct_rate / fwd_rate:.2f} the cost)"
                )  # fmt: skip
            median = [statistics.median(r[i] for r in rows) for i in range(4)]
            print(
                f"median of {args.rounds} rounds of {args.calls} calls: latency direct "
                f"{median[0] * 1e3:.2f} ms, forwarded {median[1] * 1e3:.2f} ms, ratio "
                f"{median[1] / median[0]:.2f}; throughput direct {median[2]:.0f}/s, forwarded "
                f"{median[3]:.0f}/s, ratio {median[2] / median[3]:.2f}"
            )
        finally:
            await owner.close()
            await other.close()
            await b.stop(grace=0)
            await a.stop(grace=0)


if __name__ == "__main__":
    asyncio.run(main())
