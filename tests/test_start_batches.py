"""Concurrent starts reach a worker in one StartInstances call, and every one of them runs:
a restart starts every instance at once (docs/benchmarks.md, "Restoring sessions")."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.conftest import FAST_SIM
from zapgate.engine.v1 import worker_pb2 as pb
from zapgate.sessions import events as ev
from zapgate.sessions.pool import LostRun, PoolConfig, WorkerPool
from zapgate.sessions.sim_store import SimStore


def paired_store(runtime_dir: Path, n: int) -> None:
    store = SimStore(runtime_dir / "session.db")
    store.load_or_create()
    store.save_pairing(f"55119{n:08d}:1@s.whatsapp.net", f"+55119{n:08d}")


def one_sim_worker(
    tmp_path: Path, on_event: Callable[[int, ev.EngineEvent], Awaitable[None]]
) -> WorkerPool:
    """A pool of one simulator worker (not started yet) that no worker may leave."""

    async def on_worker_lost(lost: list[LostRun]) -> None:
        raise AssertionError(f"no worker should die here: {lost}")

    config = PoolConfig(
        size=1,
        engine="sim",
        socket_dir=tmp_path / "sockets",
        sim_timings_json=json.dumps(dataclasses.asdict(FAST_SIM)),
    )
    return WorkerPool(config, on_event, on_worker_lost)


async def test_concurrent_starts_go_out_together_and_each_run_connects(tmp_path: Path) -> None:
    connected: dict[str, int] = {}
    everyone = asyncio.Event()
    count = 40

    async def on_event(run_id: int, event: ev.EngineEvent) -> None:
        if isinstance(event, ev.Connected):
            connected[event.key] = run_id
            if len(connected) == count:
                everyone.set()

    pool = one_sim_worker(tmp_path, on_event)
    await pool.start()
    slot = pool.slots[0]
    batches: list[int] = []
    send_batch = slot._start_many

    async def counted(requests: list[pb.StartInstanceRequest]) -> list[pb.StartResult]:
        batches.append(len(requests))
        return await send_batch(requests)

    slot.starts._write = counted  # counts the calls that really go to the worker
    try:
        starts = []
        for n in range(count):
            runtime_dir = tmp_path / "runtime" / f"i{n}"
            paired_store(runtime_dir, n)
            starts.append(pool.start_instance(f"acme/i{n}", runtime_dir, "", run_id=1000 + n))
        await asyncio.gather(*starts)
        await asyncio.wait_for(everyone.wait(), 60)  # guards a hang only
        assert connected == {f"acme/i{n}": 1000 + n for n in range(count)}
        assert sum(batches) == count
        assert len(batches) < count, "concurrent starts were not batched"
        assert slot.stub is not None
        assert (await slot.stub.Ping(pb.PingRequest())).hosted == count
        assert slot.runs == {f"acme/i{n}": 1000 + n for n in range(count)}
    finally:
        await pool.close()


async def test_start_instances_answers_each_start_in_order(tmp_path: Path) -> None:
    """The worker's side: one result per requested start, each run hosted."""
    config = PoolConfig(
        size=1,
        engine="sim",
        socket_dir=tmp_path / "sockets",
        sim_timings_json=json.dumps(dataclasses.asdict(FAST_SIM)),
    )

    async def ignore(*_: object) -> None:
        return None

    pool = WorkerPool(config, ignore, ignore)
    await pool.start()
    try:
        stub = pool.slots[0].stub
        assert stub is not None
        requests = []
        for n in range(3):
            runtime_dir = tmp_path / f"i{n}"
            paired_store(runtime_dir, n)
            requests.append(
                pb.StartInstanceRequest(key=f"acme/i{n}", runtime_dir=str(runtime_dir), run_id=n)
            )
        reply = await stub.StartInstances(pb.StartInstancesRequest(instances=requests))
        assert len(reply.results) == 3
        assert not any(result.HasField("error") for result in reply.results)
        assert (await stub.Ping(pb.PingRequest())).hosted == 3
    finally:
        await pool.close()
