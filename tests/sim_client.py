"""A test client for one tenant: instance calls plus the simulator's phone side."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc.aio

from tests.conftest import RunningGateway, auth
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import instance_pb2_grpc, simulator_pb2_grpc
from zapgate.v1 import simulator_pb2 as spb

State = pb.InstanceState


class SimClient:
    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.metadata = auth(key)
        self.channel = channel
        self.instances = instance_pb2_grpc.InstanceServiceStub(channel)
        self.sim = simulator_pb2_grpc.SimulatorServiceStub(channel)

    @classmethod
    async def for_tenant(cls, running: RunningGateway, tenant: str) -> SimClient:
        return cls(running.channel, await running.new_key(tenant))

    async def create(self, instance_id: str, **fields: object) -> pb.Instance:
        request = pb.CreateInstanceRequest(instance_id=instance_id, **fields)  # type: ignore[arg-type]
        return (await self.instances.CreateInstance(request, metadata=self.metadata)).instance

    async def get(self, instance_id: str) -> pb.Instance:
        request = pb.GetInstanceRequest(instance_id=instance_id)
        return (await self.instances.GetInstance(request, metadata=self.metadata)).instance

    def connect(self, instance_id: str, phone: str = "") -> AsyncIterator[pb.ConnectResponse]:
        request = pb.ConnectRequest(instance_id=instance_id, phone=phone)
        return self.instances.Connect(request, metadata=self.metadata)  # type: ignore[return-value]

    async def scan(self, instance_id: str, code: str, phone: str) -> None:
        request = spb.ScanQrRequest(instance_id=instance_id, code=code, phone=phone)
        await self.sim.ScanQr(request, metadata=self.metadata)

    async def pair(self, instance_id: str, phone: str) -> pb.ConnectResult:
        """Connect, scan the first QR code as `phone`, and return the final result."""
        async for update in self.connect(instance_id):
            if update.HasField("qr_code"):
                await self.scan(instance_id, update.qr_code.code, phone)
            if update.HasField("result"):
                return update.result
        raise AssertionError("Connect ended without a result")

    async def wait_for(
        self, instance_id: str, predicate: Callable[[pb.Instance], bool], timeout: float = 20
    ) -> pb.Instance:
        """Polls until the instance satisfies `predicate` (the timeout only guards hangs)."""
        deadline = time.monotonic() + timeout
        while True:
            instance = await self.get(instance_id)
            if predicate(instance):
                return instance
            if time.monotonic() > deadline:
                raise AssertionError(f"instance never matched; last seen:\n{instance}")
            await asyncio.sleep(0.02)

    async def wait_state(self, instance_id: str, state: int, timeout: float = 20) -> pb.Instance:
        return await self.wait_for(instance_id, lambda i: i.state == state, timeout)


async def collect(stream: AsyncIterator[pb.ConnectResponse]) -> list[pb.ConnectResponse]:
    return [update async for update in stream]
