"""One gateway per state store: a second `zapgate serve` on the same SQLite file or
PostgreSQL database refuses to start and names the first; the first keeps serving; once the
first is gone (stopped, or killed with -9) the store is free again."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from tests.conftest import gateway_config, started_gateway
from tests.server_process import ServerProcess, zapgate
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.single_node import StoreInUse
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import instance_pb2_grpc


async def test_a_second_gateway_on_the_same_store_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    async with started_gateway(tmp_path / "first", database_url=database_url) as first:
        second = Gateway(gateway_config(tmp_path / "second", database_url))
        with pytest.raises(StoreInUse, match="already uses") as refused:
            await second.start()
        if database_url.startswith("sqlite"):
            assert f"pid {os.getpid()}" in str(refused.value)
        await second.stop()
        # The first is untouched: it still answers.
        key = await first.new_key("single-node")
        stub = instance_pb2_grpc.InstanceServiceStub(first.channel)
        metadata = (("authorization", f"Bearer {key}"),)
        await stub.ListInstances(pb.ListInstancesRequest(), metadata=metadata)
    # Stopped: the store is free for the next gateway.
    async with started_gateway(tmp_path / "third", database_url=database_url) as third:
        assert third.gateway.port > 0


async def test_the_cli_says_why_and_kill_9_frees_the_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data)
    try:
        refused = zapgate(
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data),
            "--runtime-dir",
            str(tmp_path / "runtime-2"),
            "--engine",
            "sim",
        )
        assert refused.returncode != 0
        assert f"another zapgate serve (pid {first.process.pid}) already uses" in refused.stderr
        assert "Traceback" not in refused.stderr
        first.process.kill()  # kill -9: the kernel drops the lock with the process
        first.wait()
    finally:
        first.close()
    again = ServerProcess(data)
    try:
        async with grpc.aio.insecure_channel(again.address) as channel:
            await channel.channel_ready()
    finally:
        again.close()
