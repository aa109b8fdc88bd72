"""The simulated WhatsApp server on loopback, driven through the simulator engine's own client
(sessions/simwa_client.py): one connection per device, only the current one delivers,
receipts follow the device, and the record survives a restart."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zapgate.engine.v1 import simwa_pb2 as pb
from zapgate.sessions import events as ev
from zapgate.sessions.errors import NotConnected
from zapgate.sessions.sim_phone import PendingReceipt, PhoneLog, Received
from zapgate.sessions.sim_store import SimDevice, SimStore
from zapgate.sessions.simwa_client import Labels, Link, SimServer, device_identity
from zapgate.sessions.simwa_server import Running, start

KEY = ev.InstanceKey("acme/shared")
HANG_GUARD = 20.0  # only against hangs


@dataclass
class Holder:
    """One side that attaches a device: what it was pushed, and how its link ended."""

    server: SimServer
    receipts: list[pb.OwedReceipt] = field(default_factory=list)
    ended: list[ev.EngineEvent | None] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def attach(self, device: SimDevice) -> Link:
        def on_receipt(receipt: pb.OwedReceipt) -> None:
            self.receipts.append(receipt)
            self.changed.set()

        def on_end(event: ev.EngineEvent | None) -> None:
            self.ended.append(event)
            self.changed.set()

        return await self.server.attach(device, on_receipt, on_end, KEY)

    async def until(self, condition: object) -> None:
        async with asyncio.timeout(HANG_GUARD):
            while not callable(condition) or not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def whatsapp(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start("127.0.0.1:0", tmp_path / "simwa")
    try:
        yield running
    finally:
        await running.stop()


def paired_device(tmp_path: Path, jid: str = "5511977770001:42@s.whatsapp.net") -> SimDevice:
    store = SimStore(tmp_path / "session.db")
    store.load_or_create()
    store.save_pairing(jid, "+5511977770001")
    return store.load_or_create()


def holder(running: Running, node: str) -> Holder:
    return Holder(SimServer(f"127.0.0.1:{running.port}", Labels(node, "worker-0")))


def text(message_id: str, body: str) -> Received:
    return Received("5511966660002@s.whatsapp.net", "text", body, message_id, time.time())


async def test_a_newer_connection_kicks_the_older_and_is_recorded(
    tmp_path: Path, whatsapp: Running
) -> None:
    device = paired_device(tmp_path)
    a, b = holder(whatsapp, "node-a"), holder(whatsapp, "node-b")
    old = await a.attach(device)
    new = await b.attach(device)
    await a.until(lambda: a.ended)
    assert a.ended == [ev.StreamReplaced(KEY)]
    assert b.ended == []
    [replaced] = whatsapp.service.record.replacements()
    assert (replaced.device_jid, replaced.old.node, replaced.new.node) == (
        device.jid,
        "node-a",
        "node-b",
    )
    assert (replaced.old.connection_id, replaced.new.connection_id) == (
        old.connection_id,
        new.connection_id,
    )
    [counters] = whatsapp.service.record.devices()
    assert (counters.attaches, counters.replacements, counters.node) == (2, 1, "node-b")
    assert counters.device_identity == device_identity(device)
    for side in (a, b):
        await side.server.close()


async def test_only_the_current_connection_delivers(tmp_path: Path, whatsapp: Running) -> None:
    device = paired_device(tmp_path)
    a, b = holder(whatsapp, "node-a"), holder(whatsapp, "node-b")
    old = await a.attach(device)
    await old.deliver(text("3EB0AAA", "from a"), [])
    new = await b.attach(device)
    with pytest.raises(NotConnected):
        await old.deliver(text("3EB0BBB", "late from a"), [])
    await new.deliver(text("3EB0CCC", "from b"), [])
    assert device.jid is not None
    received = PhoneLog(whatsapp.service.phone_dir(device.jid)).read()
    assert [r.text for r in received] == ["from a", "from b"]
    [counters] = whatsapp.service.record.devices()
    assert (counters.messages_received, counters.duplicates) == (2, 0)
    for side in (a, b):
        await side.server.close()


async def test_a_message_id_delivered_twice_counts_as_a_duplicate(
    tmp_path: Path, whatsapp: Running
) -> None:
    device = paired_device(tmp_path)
    a = holder(whatsapp, "node-a")
    link = await a.attach(device)
    await link.deliver(text("3EB0AAA", "once"), [])
    await link.deliver(text("3EB0AAA", "once"), [])
    await link.deliver(text("3EB0BBB", "other"), [])
    [counters] = whatsapp.service.record.devices()
    assert (counters.messages_received, counters.duplicates) == (3, 1)
    await a.server.close()


async def test_owed_receipts_wait_for_the_next_connection(
    tmp_path: Path, whatsapp: Running
) -> None:
    device = paired_device(tmp_path)
    assert device.jid is not None
    recipient = "5511966660002@s.whatsapp.net"
    first = holder(whatsapp, "node-a")
    link = await first.attach(device)
    now = time.time()
    owed = [
        PendingReceipt("3EB0AAA", recipient, "delivered", now),
        PendingReceipt("3EB0AAA", recipient, "read", now + 3600),  # not due while we look
    ]
    await link.deliver(text("3EB0AAA", "hi"), owed)
    await first.until(lambda: first.receipts)
    assert [(r.message_id, r.kind) for r in first.receipts] == [("3EB0AAA", "delivered")]
    await link.ack(first.receipts[0])
    await link.close()
    await first.server.close()

    # The read receipt is still owed; it becomes due while no connection is attached.
    phone = PhoneLog(whatsapp.service.phone_dir(device.jid))
    [still_owed] = phone.pending_receipts()
    assert still_owed.kind == "read"
    with sqlite3.connect(phone.path) as db:  # the hour passes
        db.execute("UPDATE pending_receipts SET due_at = 0")

    second = holder(whatsapp, "node-b")
    await second.attach(device)
    await second.until(lambda: second.receipts)
    assert [(r.message_id, r.kind) for r in second.receipts] == [("3EB0AAA", "read")]
    assert whatsapp.service.record.replacements() == []  # the first had left: no kick
    await second.server.close()


async def test_the_record_and_phones_survive_a_restart(tmp_path: Path) -> None:
    device = paired_device(tmp_path)
    assert device.jid is not None
    running = await start("127.0.0.1:0", tmp_path / "simwa")
    a, b = holder(running, "node-a"), holder(running, "node-b")
    await (await a.attach(device)).deliver(text("3EB0AAA", "kept"), [])
    await b.attach(device)
    await a.until(lambda: a.ended)
    for side in (a, b):
        await side.server.close()
    await running.stop()

    again = await start("127.0.0.1:0", tmp_path / "simwa")
    try:
        assert [r.new.node for r in again.service.record.replacements()] == ["node-b"]
        [counters] = again.service.record.devices()
        assert (counters.messages_received, counters.replacements) == (1, 1)
        received = PhoneLog(again.service.phone_dir(device.jid)).read()
        assert [r.text for r in received] == ["kept"]
    finally:
        await again.stop()
