"""Cluster nodes on one PostgreSQL and one simulated WhatsApp: a takeover after a node's
kill -9 never has two owners of a device (the server's record of stream replacements stays
empty), and what was sent before it reached each phone once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.cluster_nodes import Cluster, client_of, until
from tests.messaging import Messenger
from tests.sim_server import simulated_whatsapp
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

            async def attached_from_b() -> bool:
                devices = await whatsapp.devices()
                return all(d.connected and d.node == "b" for d in devices)

            # The state row may still be a's CONNECTED: wait for b's own connections.
            await until(attached_from_b, "b's connections attached")
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
