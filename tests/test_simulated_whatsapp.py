"""`zapgate simulated-whatsapp`: one phone side for every gateway that attaches to it. Real
processes only: the server, and `zapgate serve` gateways (single-node SQLite, separate data
dirs) restored from the same session."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.messaging import Messenger
from tests.server_process import ServerProcess, zapgate
from tests.sim_client import SimClient
from tests.sim_server import SimulatedWhatsApp, simulated_whatsapp
from tests.test_sessions_at_rest import SERVER_FLAGS, make_key, server_client
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb

S = ipb.InstanceState
R = ipb.StateReason
M = mpb.MessageState
PHONE = "+5511977770001"
FRIEND = "+5511966660002"


def gateway(host: Path, whatsapp: SimulatedWhatsApp, read_seconds: float = 0.2) -> ServerProcess:
    (host / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    return ServerProcess(
        host / "data",
        *SERVER_FLAGS,
        "--sim-delivered-seconds",
        "0.1",
        "--sim-read-seconds",
        str(read_seconds),
        *whatsapp.flags(),
    )


@asynccontextmanager
async def client_of(host: Path, server: ServerProcess) -> AsyncIterator[SimClient]:
    key = await make_key(host / "data", "acme")
    async with server_client(server, key) as client:
        yield client


async def paired(host: Path, whatsapp: SimulatedWhatsApp) -> str:
    """An instance paired on a gateway that is stopped again; its device JID."""
    server = gateway(host, whatsapp)
    try:
        async with client_of(host, server) as client:
            await Messenger(client).ready("shared", PHONE)
            jid = (await client.get("shared")).jid
    finally:
        server.terminate()
        server.wait()
        server.close()
    shutil.rmtree(host / "runtime")  # what follows restores from the snapshot
    return jid


async def test_a_second_gateway_on_the_same_device_kicks_the_first(tmp_path: Path) -> None:
    with simulated_whatsapp(tmp_path / "simwa") as whatsapp:
        jid = await paired(tmp_path / "a", whatsapp)
        shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")  # the same session
        first = gateway(tmp_path / "a", whatsapp)
        try:
            async with client_of(tmp_path / "a", first) as a:
                await a.wait_state("shared", S.INSTANCE_STATE_CONNECTED)
                assert await whatsapp.replacements() == []
                second = gateway(tmp_path / "b", whatsapp)
                try:
                    async with client_of(tmp_path / "b", second) as b:
                        await b.wait_state("shared", S.INSTANCE_STATE_CONNECTED)
                        kicked = await a.wait_state("shared", S.INSTANCE_STATE_ERROR)
                        assert kicked.state_reason == R.STATE_REASON_STREAM_REPLACED
                        # The newer connection keeps the device and can send.
                        sent = await Messenger(b).send_text("shared", FRIEND, "from b")
                        await Messenger(b).wait_message(
                            "shared", sent.id, lambda m: m.state >= M.MESSAGE_STATE_DELIVERED
                        )
                finally:
                    second.close()
        finally:
            first.close()
        [replaced] = await whatsapp.replacements()
        assert replaced.device_jid == jid
        assert replaced.old_node != replaced.new_node  # two gateway processes
        assert replaced.old_connection_id != replaced.new_connection_id
        [device] = await whatsapp.devices()
        assert (device.device_jid, device.replacements, device.duplicates) == (jid, 1, 0)
        texts = [r.text for r in await whatsapp.received(jid) if r.kind == "text"]
        assert texts == ["from b"]


async def test_sends_reach_the_phone_once_and_receipts_come_back(tmp_path: Path) -> None:
    with simulated_whatsapp(tmp_path / "simwa") as whatsapp:
        server = gateway(tmp_path / "a", whatsapp)
        try:
            async with client_of(tmp_path / "a", server) as client:
                messenger = Messenger(client)
                await messenger.ready("solo", PHONE)
                jid = (await client.get("solo")).jid
                ids = [
                    (await messenger.send_text("solo", FRIEND, f"hello {n}")).id for n in range(3)
                ]
                for message_id in ids:
                    read = await messenger.wait_message(
                        "solo", message_id, lambda m: m.state == M.MESSAGE_STATE_READ
                    )
                    assert read.whatsapp_message_id
                # SimulatorService reads the phone log from the server in this mode.
                on_phone = [m for m in await messenger.received("solo") if m.kind == "text"]
                assert [m.text for m in on_phone] == ["hello 0", "hello 1", "hello 2"]
        finally:
            server.close()
        from_server = [r for r in await whatsapp.received(jid) if r.kind == "text"]
        assert [r.message_id for r in from_server] == [m.whatsapp_message_id for m in on_phone]
        [device] = await whatsapp.devices()
        assert (device.messages_received, device.duplicates, device.replacements) == (3, 0, 0)
        # The gateway's runtime dir holds no phone file: the phone side is the server's.
        assert not list((tmp_path / "a" / "runtime").rglob("sim-phone.db"))


async def test_the_server_survives_a_kill_and_the_gateway_comes_back(tmp_path: Path) -> None:
    with simulated_whatsapp(tmp_path / "simwa") as whatsapp:
        # Reads come late, so the read receipt is likely still owed when the server dies.
        server = gateway(tmp_path / "a", whatsapp, read_seconds=2.0)
        try:
            async with client_of(tmp_path / "a", server) as client:
                messenger = Messenger(client)
                await messenger.ready("solo", PHONE)
                jid = (await client.get("solo")).jid
                first = await messenger.send_text("solo", FRIEND, "before the kill")
                await messenger.wait_message(
                    "solo", first.id, lambda m: m.state >= M.MESSAGE_STATE_DELIVERED
                )
                whatsapp.kill()
                lost = await client.wait_state("solo", S.INSTANCE_STATE_CONNECTING)
                assert lost.state_reason in (
                    R.STATE_REASON_CONNECTION_LOST,
                    R.STATE_REASON_RECONNECTING,
                )
                whatsapp.start()
                await client.wait_state("solo", S.INSTANCE_STATE_CONNECTED)
                # Owed before the kill, the read receipt arrives after the reconnect.
                await messenger.wait_message(
                    "solo", first.id, lambda m: m.state == M.MESSAGE_STATE_READ
                )
                second = await messenger.send_text("solo", FRIEND, "after the restart")
                await messenger.wait_message(
                    "solo", second.id, lambda m: m.state >= M.MESSAGE_STATE_DELIVERED
                )
        finally:
            server.close()
        texts = [r.text for r in await whatsapp.received(jid) if r.kind == "text"]
        assert texts == ["before the kill", "after the restart"]
        [device] = await whatsapp.devices()
        assert (device.messages_received, device.duplicates, device.replacements) == (2, 0, 0)
        assert device.attaches >= 2  # attached again after the restart


def test_sim_server_needs_the_simulator_engine(tmp_path: Path) -> None:
    refused = zapgate(
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--engine",
        "neonize",
        "--sim-server",
        "127.0.0.1:1",
    )
    assert refused.returncode != 0
    assert "--sim-server needs --engine sim" in refused.stderr
