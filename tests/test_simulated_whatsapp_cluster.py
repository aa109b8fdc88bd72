"""Cluster nodes on one PostgreSQL and one simulated WhatsApp: a takeover after a node's
kill -9 or pause never has two owners of a device (the server's record of stream
replacements stays empty), and what was sent before it reached each phone once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.cluster_nodes import Cluster, client_of, until
from tests.messaging import Messenger
from tests.sim_server import SimulatedWhatsApp, simulated_whatsapp
from tests.test_cluster import INSTANCES, all_connected_on, pair_on, postgres_url
from zapgate.v1 import message_pb2

__all__ = ["postgres_url"]  # the fixture, used by name
M = message_pb2.MessageState
FRIEND = "+5511966660002"


async def test_a_takeover_after_kill_9_never_has_two_owners(
    tmp_path: Path, postgres_url: str
) -> None:
    with simulated_whatsapp(tmp_path / "simwa") as whatsapp:
        cluster = Cluster(tmp_path, postgres_url)
        try:
            cluster.start("a", *whatsapp.flags())
            key = await cluster.new_key("acme")
            jids = await pair_on(cluster, "a", key)
            cluster.start("b", *whatsapp.flags())
            async with client_of(cluster.nodes["a"], key) as client:
                messenger = Messenger(client)
                for instance_id in INSTANCES:
                    sent = await messenger.send_text(instance_id, FRIEND, f"from {instance_id}")
                    await messenger.wait_message(
                        instance_id, sent.id, lambda m: m.state >= M.MESSAGE_STATE_DELIVERED
                    )
            cluster.nodes["a"].process.kill()
            await asyncio.to_thread(cluster.nodes["a"].wait)
            await until(lambda: all_connected_on(cluster, "b", key, jids), "b owns every one")
            await until(lambda: attached_from(whatsapp, "b"), "b's connections attached")
        finally:
            cluster.close()
        assert await whatsapp.replacements() == []
        devices = {d.device_jid: d for d in await whatsapp.devices()}
        assert set(devices) == set(jids.values())
        for instance_id, jid in jids.items():
            device = devices[jid]
            assert (device.attaches, device.duplicates, device.messages_received) == (2, 0, 1)
            assert device.node == "b"  # the last holder
            texts = [r.text for r in await whatsapp.received(jid) if r.kind == "text"]
            assert texts == [f"from {instance_id}"]


async def test_a_node_paused_past_its_lease_never_has_two_owners(
    tmp_path: Path, postgres_url: str
) -> None:
    """SIGSTOP stops the node's core only: its workers see the core go silent and stop
    their connections themselves before its leases can expire (sessions/core_watch.py)."""
    with simulated_whatsapp(tmp_path / "simwa") as whatsapp:
        cluster = Cluster(tmp_path, postgres_url)
        try:
            a = cluster.start("a", *whatsapp.flags())
            key = await cluster.new_key("acme")
            jids = await pair_on(cluster, "a", key)
            cluster.start("b", *whatsapp.flags())
            a.process.send_signal(signal.SIGSTOP)
            try:
                await until(lambda: attached_from(whatsapp, "b"), "b's connections attached")
            finally:
                a.process.send_signal(signal.SIGCONT)
            for _ in INSTANCES:  # awake, a knows its leases are lost
                a.wait_for(r"lost the lease of acme/i\d \(.*\): stopping its connection")
            assert await all_connected_on(cluster, "b", key, jids)
        finally:
            cluster.close()
        assert await whatsapp.replacements() == []
        assert {d.device_jid: (d.node, d.duplicates) for d in await whatsapp.devices()} == {
            jid: ("b", 0) for jid in jids.values()
        }


async def attached_from(whatsapp: SimulatedWhatsApp, node: str) -> bool:
    """Every device connected from `node` (a state row may still be another node's)."""
    devices = await whatsapp.devices()
    return bool(devices) and all(d.connected and d.node == node for d in devices)
