"""`zapgate serve` as a real process: health, reflection, graceful SIGTERM, first-start key."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.conftest import auth
from tests.server_process import ServerProcess
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import instance_pb2_grpc


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    yield process
    process.close()


def stored_ids(tmp_path: Path) -> list[tuple[str]]:
    with sqlite3.connect(tmp_path / "data" / "zapgate.db") as db:
        return db.execute("SELECT id FROM instances ORDER BY id").fetchall()


def initial_key(data_dir: Path) -> str:
    return (data_dir / "initial-api-key").read_text().strip()


def test_first_start_writes_a_private_initial_key(server: ServerProcess, tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "initial-api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = initial_key(tmp_path / "data")
    assert key.startswith("zg_")
    assert key not in "".join(server.log), "the key must never be logged"
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


async def test_health_is_serving_without_a_key(server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "zapgate.v1.InstanceService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_api(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"zapgate.v1.InstanceService", "grpc.health.v1.Health"} <= services
        found = database.FindFileContainingSymbol("zapgate.v1.InstanceService")
        assert found.name == "zapgate/v1/instance.proto"


@asynccontextmanager
async def draining_with_a_call_in_flight(
    server: ServerProcess, tmp_path: Path, instance_id: str
) -> AsyncIterator[tuple[asyncio.Future[pb.CreateInstanceResponse], sqlite3.Connection]]:
    """A CreateInstance blocked in the store (SQLite's write lock held from outside) when
    SIGTERM arrives. The caller releases the lock with `blocker.execute("COMMIT")`."""
    key = auth(initial_key(tmp_path / "data"))
    blocker = sqlite3.connect(tmp_path / "data" / "zapgate.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = instance_pb2_grpc.InstanceServiceStub(channel)
            in_flight = asyncio.ensure_future(
                stub.CreateInstance(pb.CreateInstanceRequest(instance_id=instance_id), metadata=key)
            )
            await asyncio.to_thread(server.wait_for, "call started: .*CreateInstance")
            server.terminate()
            await asyncio.to_thread(server.wait_for, "not accepting new calls")
            yield in_flight, blocker
    finally:
        blocker.close()


async def test_sigterm_lets_in_flight_calls_finish(server: ServerProcess, tmp_path: Path) -> None:
    async with draining_with_a_call_in_flight(server, tmp_path, "late") as (in_flight, blocker):
        assert not in_flight.done()
        assert server.process.poll() is None, "the server must wait for the call"
        blocker.execute("COMMIT")
        response = await in_flight
        assert response.created
        assert response.instance.id == "late"
    assert await asyncio.to_thread(server.wait) == 0
    server.wait_for("zapgate stopped")
    assert stored_ids(tmp_path) == [("late",)]


async def test_new_calls_are_refused_while_draining(server: ServerProcess, tmp_path: Path) -> None:
    key = auth(initial_key(tmp_path / "data"))
    async with draining_with_a_call_in_flight(server, tmp_path, "first") as (in_flight, blocker):
        async with grpc.aio.insecure_channel(server.address) as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await instance_pb2_grpc.InstanceServiceStub(fresh).CreateInstance(
                    pb.CreateInstanceRequest(instance_id="refused"), metadata=key, timeout=5
                )
        # gRPC core refuses the connection (UNAVAILABLE) or cancels the call on an accepted
        # one (CANCELLED), depending on timing; either way it is never processed (below).
        assert refused.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
        blocker.execute("COMMIT")
        assert (await in_flight).created
    assert await asyncio.to_thread(server.wait) == 0
    assert stored_ids(tmp_path) == [("first",)]
