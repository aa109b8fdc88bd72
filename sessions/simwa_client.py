"""The simulator engine's side of a simulated WhatsApp server (sessions/simwa_server.py): a
device's long-lived connection (Link), and the reads the core makes for SimulatorService."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from zapgate.engine.v1 import simwa_pb2 as pb
from zapgate.engine.v1 import simwa_pb2_grpc
from zapgate.sessions import events as ev
from zapgate.sessions.errors import MaybeSent, NotConnected
from zapgate.sessions.sim_phone import PendingReceipt, Received
from zapgate.sessions.sim_store import SimDevice, public_key_b64

log = logging.getLogger(__name__)
ATTACH_TIMEOUT = 10.0


def device_identity(device: SimDevice) -> str:
    """A fingerprint of the device's keys: two connections with it are the same device."""
    return hashlib.sha256(public_key_b64(device.noise_key).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Labels:
    """Who holds a connection, for the server's record: the gateway node and engine worker."""

    node: str
    worker: str


class SimServer:
    """A channel to the server; one per worker process (or per core, for reads)."""

    def __init__(self, address: str, labels: Labels) -> None:
        self.address = address
        self.labels = labels
        self._channel = grpc.aio.insecure_channel(address)
        self.stub = simwa_pb2_grpc.SimulatedWhatsAppServiceStub(self._channel)

    async def attach(
        self,
        device: SimDevice,
        on_receipt: Callable[[pb.OwedReceipt], None],
        on_end: Callable[[ev.EngineEvent | None], None],
        key: ev.InstanceKey,
    ) -> Link:
        """Opens the device's connection; raises NotConnected when the server cannot be
        reached. `on_end` gets StreamReplaced (a newer connection kicked this one) or
        Disconnected (the server went away), once; None when the link was closed here."""
        assert device.jid is not None
        call = self.stub.Attach(
            pb.AttachRequest(
                device_jid=device.jid,
                device_identity=device_identity(device),
                node=self.labels.node,
                worker=self.labels.worker,
            )
        )
        try:
            first = await asyncio.wait_for(call.read(), ATTACH_TIMEOUT)
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            call.cancel()
            raise NotConnected(f"the simulated WhatsApp server is unreachable: {error}") from None
        if not isinstance(first, pb.AttachResponse) or not first.HasField("attached"):
            call.cancel()
            raise NotConnected("the simulated WhatsApp server ended the connection")
        link = Link(self, device.jid, first.attached.connection_id, call)
        link.task = asyncio.create_task(link.pump(on_receipt, on_end, key))
        return link

    async def close(self) -> None:
        await self._channel.close(None)


async def list_received(address: str, device_jid: str) -> list[Received]:
    """What the phones received from a device, on a channel of its own (a rare read)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = simwa_pb2_grpc.SimulatedWhatsAppServiceStub(channel)
        answer = await stub.ListReceived(pb.ListReceivedRequest(device_jid=device_jid))
    return [Received(**json.loads(item)) for item in answer.received_json]


class Link:
    """One attached connection of a device."""

    def __init__(
        self,
        server: SimServer,
        device_jid: str,
        connection_id: str,
        call: grpc.aio.UnaryStreamCall[pb.AttachRequest, pb.AttachResponse],
    ) -> None:
        self.server = server
        self.device_jid = device_jid
        self.connection_id = connection_id
        self._call = call
        self.task: asyncio.Task[None] | None = None

    async def pump(
        self,
        on_receipt: Callable[[pb.OwedReceipt], None],
        on_end: Callable[[ev.EngineEvent | None], None],
        key: ev.InstanceKey,
    ) -> None:
        ended: ev.EngineEvent | None = ev.Disconnected(key, "the simulated WhatsApp server ended")
        try:
            while True:
                push = await self._call.read()
                if not isinstance(push, pb.AttachResponse):  # EOF: the server ended it
                    break
                if push.HasField("replaced"):
                    ended = ev.StreamReplaced(key)
                    break
                if push.HasField("receipt"):
                    on_receipt(push.receipt)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                ended = None  # closed here
            else:
                ended = ev.Disconnected(key, f"simulated WhatsApp unreachable: {error.code().name}")
        except asyncio.CancelledError:
            ended = None
            raise
        finally:
            on_end(ended)

    async def deliver(self, received: Received, receipts: list[PendingReceipt]) -> None:
        request = pb.DeliverRequest(
            connection_id=self.connection_id,
            device_jid=self.device_jid,
            received_json=json.dumps(dataclasses.asdict(received)),
            receipts=[
                pb.PendingReceipt(
                    message_id=r.message_id,
                    recipient_jid=r.recipient_jid,
                    kind=r.kind,
                    due_at=r.due_at,
                )
                for r in receipts
            ],
        )
        try:
            await self.server.stub.Deliver(request)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise NotConnected(error.details() or "stream replaced") from None
            raise MaybeSent(f"no answer from the simulated WhatsApp server: {error}") from None

    async def ack(self, receipt: pb.OwedReceipt) -> None:
        await self.server.stub.AckReceipt(
            pb.AckReceiptRequest(
                connection_id=self.connection_id,
                device_jid=self.device_jid,
                message_id=receipt.message_id,
                kind=receipt.kind,
            )
        )

    async def close(self) -> None:
        self._call.cancel()
        if self.task is not None and self.task is not asyncio.current_task():
            await asyncio.gather(self.task, return_exceptions=True)
