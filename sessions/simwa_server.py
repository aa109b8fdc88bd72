"""The simulated WhatsApp server: one phone side shared by every simulator engine started with
`--sim-server` (every worker of every node), run as `zapgate simulated-whatsapp`.

It does what WhatsApp does with the connections of a device: one at a time, a newer one kicks
the older with "stream replaced". It keeps each device's phone side (what the recipients
received, the receipts their phones owe: sessions/sim_phone.py, one file per device) in its
data dir, and pushes receipts to whichever connection of the device is current; owed ones wait
for the next attach."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from zapgate.engine.v1 import simwa_pb2 as pb
from zapgate.engine.v1 import simwa_pb2_grpc
from zapgate.sessions.sim_phone import PendingReceipt, PhoneLog, Received
from zapgate.sessions.simwa_record import Holder, Record

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(eq=False)
class Connection:
    device_jid: str
    holder: Holder
    pushes: asyncio.Queue[pb.AttachResponse] = field(default_factory=asyncio.Queue)
    pushed: set[tuple[str, str]] = field(default_factory=set)  # receipts sent, not yet acked


@dataclass(eq=False)
class Device:
    phone: PhoneLog
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a receipt was added
    current: Connection | None = None


class SimulatedWhatsApp(simwa_pb2_grpc.SimulatedWhatsAppServiceServicer):
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self.record = Record(data_dir)
        self._devices: dict[str, Device] = {}

    def _device(self, device_jid: str) -> Device:
        device = self._devices.get(device_jid)
        if device is None:
            directory = self.phone_dir(device_jid)
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            device = self._devices[device_jid] = Device(PhoneLog(directory))
        return device

    def phone_dir(self, device_jid: str) -> Path:
        """One directory per device: its phone file (the same format as the in-worker one)."""
        return self._data_dir / "phones" / device_jid.replace("/", "_")

    async def Attach(
        self, request: pb.AttachRequest, context: Context
    ) -> AsyncIterator[pb.AttachResponse]:
        if not request.device_jid:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "device_jid is required")
        device = self._device(request.device_jid)
        connection = Connection(
            request.device_jid,
            Holder(f"c{secrets.token_hex(6)}", request.node, request.worker),
        )
        async with device.lock:
            old, device.current = device.current, connection
            self.record.attached(request.device_jid, request.device_identity, connection.holder)
            if old is not None:
                self.record.replaced(request.device_jid, old.holder, connection.holder)
                replaced = pb.Replaced(node=request.node, worker=request.worker)
                old.pushes.put_nowait(pb.AttachResponse(replaced=replaced))
                log.warning(
                    "stream replaced: %s held by %s/%s, now by %s/%s",
                    request.device_jid,
                    old.holder.node,
                    old.holder.worker,
                    request.node,
                    request.worker,
                )
        attached = pb.Attached(connection_id=connection.holder.connection_id)
        yield pb.AttachResponse(attached=attached)
        pusher = asyncio.create_task(self._push_receipts(device, connection))
        try:
            while True:
                push = await connection.pushes.get()
                yield push
                if push.HasField("replaced"):
                    return
        finally:
            pusher.cancel()
            if device.current is connection:
                device.current = None

    async def _push_receipts(self, device: Device, connection: Connection) -> None:
        """Owed receipts, each when due, to this connection while it is the device's."""
        while device.current is connection:
            device.wake.clear()
            owed = [
                r
                for r in await asyncio.to_thread(device.phone.pending_receipts)
                if (r.message_id, r.kind) not in connection.pushed
            ]
            due = [r for r in owed if r.due_at <= time.time()]
            for receipt in due:
                connection.pushed.add((receipt.message_id, receipt.kind))
                owed_receipt = pb.OwedReceipt(
                    message_id=receipt.message_id,
                    recipient_jid=receipt.recipient_jid,
                    kind=receipt.kind,
                )
                connection.pushes.put_nowait(pb.AttachResponse(receipt=owed_receipt))
            if due:
                continue
            wait = min((r.due_at for r in owed), default=time.time() + 3600) - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(device.wake.wait(), max(0.0, wait))

    async def Deliver(self, request: pb.DeliverRequest, context: Context) -> pb.DeliverResponse:
        device = self._device(request.device_jid)
        try:
            received = Received(**json.loads(request.received_json))
        except (TypeError, ValueError) as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"received_json: {error}")
        receipts = [
            PendingReceipt(r.message_id, r.recipient_jid, r.kind, r.due_at)
            for r in request.receipts
        ]
        async with device.lock:
            current = device.current
            if current is None or current.holder.connection_id != request.connection_id:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "this connection is not the device's current one (stream replaced or gone)",
                )
            await asyncio.to_thread(device.phone.append, received, receipts)
            duplicate = bool(received.message_id) and self.record.message_delivered(
                request.device_jid, received.message_id
            )
        if receipts:
            device.wake.set()
        return pb.DeliverResponse(duplicate=duplicate)

    async def AckReceipt(
        self, request: pb.AckReceiptRequest, context: Context
    ) -> pb.AckReceiptResponse:
        device = self._device(request.device_jid)
        await asyncio.to_thread(device.phone.receipt_sent, request.message_id, request.kind)
        return pb.AckReceiptResponse()

    async def ListReceived(
        self, request: pb.ListReceivedRequest, context: Context
    ) -> pb.ListReceivedResponse:
        received = await asyncio.to_thread(self._device(request.device_jid).phone.read)
        return pb.ListReceivedResponse(
            received_json=[json.dumps(dataclasses.asdict(r)) for r in received]
        )

    async def ListStreamReplacements(
        self, request: pb.ListStreamReplacementsRequest, context: Context
    ) -> pb.ListStreamReplacementsResponse:
        return pb.ListStreamReplacementsResponse(
            replacements=[
                pb.StreamReplacement(
                    time=r.at,
                    device_jid=r.device_jid,
                    old_connection_id=r.old.connection_id,
                    old_node=r.old.node,
                    old_worker=r.old.worker,
                    new_connection_id=r.new.connection_id,
                    new_node=r.new.node,
                    new_worker=r.new.worker,
                )
                for r in self.record.replacements()
            ]
        )

    async def ListDevices(
        self, request: pb.ListDevicesRequest, context: Context
    ) -> pb.ListDevicesResponse:
        return pb.ListDevicesResponse(
            devices=[
                pb.DeviceCounters(
                    **dataclasses.asdict(row),
                    connected=self._connected(row.device_jid),
                )
                for row in self.record.devices()
            ]
        )

    def _connected(self, device_jid: str) -> bool:
        device = self._devices.get(device_jid)
        return device is not None and device.current is not None


@dataclass(frozen=True)
class Running:
    server: grpc.aio.Server
    service: SimulatedWhatsApp
    port: int

    async def stop(self) -> None:
        await self.server.stop(0.5)
        self.service.record.close()


async def start(listen: str, data_dir: Path) -> Running:
    """Starts serving on `listen` (port 0 picks a free one)."""
    service = SimulatedWhatsApp(data_dir)
    server = grpc.aio.server()
    simwa_pb2_grpc.add_SimulatedWhatsAppServiceServicer_to_server(service, server)
    port = server.add_insecure_port(listen)
    await server.start()
    return Running(server, service, port)


async def serve(listen: str, data_dir: Path) -> None:
    """Serves until SIGTERM/SIGINT; logs the bound address (what tests/sim_server.py reads)."""
    running = await start(listen, data_dir)
    host = listen.rpartition(":")[0]
    log.info("simulated WhatsApp listening on %s:%d (data in %s)", host, running.port, data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await running.stop()
