"""Several `zapgate serve --cluster` nodes on one PostgreSQL: each instance is owned by one
node through a lease; a node killed with -9 loses its instances to the others, which
connect them from the encrypted snapshots with no QR; a node paused past its lease is
fenced (its stale writes are refused by the store) and stops its connections when it
wakes; a call on a node that does not own the instance is forwarded to the owner."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from pathlib import Path

import grpc
import pytest

from tests.cluster_nodes import CLUSTER_SECRET, LEASE_TTL, Cluster, client_of, until
from tests.conftest import gateway_config, started_gateway
from tests.messaging import FAST_POLICY, Messenger
from tests.postgres import create_database
from tests.server_process import ServerProcess, zapgate
from tests.sim_client import SimClient
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.fencing import Fenced, FenceToken
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.leases import LeaseRepository
from zapgate.gateway.store.single_node import StoreInUse
from zapgate.v1 import event_pb2, event_pb2_grpc, message_pb2
from zapgate.v1 import instance_pb2 as pb

S = pb.InstanceState
R = pb.StateReason
M = message_pb2.MessageState
INSTANCES = [f"i{n}" for n in range(4)]
# These tests are about a node losing its instances: none of them moves before (the hand-over
# of a joining node's share and the drain are tests/test_cluster_placement.py's).
NO_HANDOVER = ("--handover-batch", "0")


_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    """A fresh PostgreSQL database: cluster mode runs on PostgreSQL only."""
    return create_database(postgres_admin_url, f"zapgate_cluster_{os.getpid()}_{next(_databases)}")


async def pair_on(cluster: Cluster, node: str, key: str) -> dict[str, str]:
    """Creates and pairs INSTANCES through `node`; returns their JIDs."""
    jids = {}
    async with client_of(cluster.nodes[node], key) as client:
        for n, instance_id in enumerate(INSTANCES):
            await client.create(instance_id)
            result = await client.pair(instance_id, f"+55119555{n:05d}")
            assert result.outcome == pb.CONNECT_OUTCOME_CONNECTED
            jids[instance_id] = result.instance.jid

    async def snapshotted() -> bool:
        rows = await cluster.rows("SELECT count(*) FROM session_snapshots")
        return int(rows[0][0]) >= len(INSTANCES)  # type: ignore[call-overload]

    await until(snapshotted, "every session snapshotted")
    return jids


async def all_connected_on(cluster: Cluster, node: str, key: str, jids: dict[str, str]) -> bool:
    leases = await cluster.leases()
    if any(leases.get(instance_id, ("", 0))[0] != node for instance_id in INSTANCES):
        return False
    async with client_of(cluster.nodes[node], key) as client:
        for instance_id, jid in jids.items():
            instance = await client.get(instance_id)
            if instance.state != S.INSTANCE_STATE_CONNECTED:
                return False
            assert instance.jid == jid  # the same session, restored
    return True


async def qr_events_since(cluster: Cluster, cursor: int) -> int:
    rows = await cluster.rows(
        "SELECT count(*) FROM events WHERE cursor > :cursor AND type = :qr",
        cursor=cursor,
        qr=event_pb2.EVENT_TYPE_QR_UPDATED,
    )
    return int(rows[0][0])  # type: ignore[call-overload]


async def last_cursor(cluster: Cluster) -> int:
    rows = await cluster.rows("SELECT coalesce(max(cursor), 0) FROM events")
    return int(rows[0][0])  # type: ignore[call-overload]


async def test_sqlite_with_cluster_is_refused_with_a_reason(tmp_path: Path) -> None:
    refused = await asyncio.to_thread(
        zapgate,
        "serve",
        "--cluster",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path / "data"),
        "--runtime-dir",
        str(tmp_path / "runtime"),
        "--master-key-file",
        str(Cluster(tmp_path, "").key_file),
        "--cluster-secret",
        CLUSTER_SECRET,
        "--engine",
        "sim",
    )
    assert refused.returncode != 0
    assert "--cluster needs PostgreSQL" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_cluster_nodes_share_a_database_but_never_with_a_single_node_gateway(
    tmp_path: Path, postgres_url: str
) -> None:
    key_file = Cluster(tmp_path, postgres_url).key_file

    def node(name: str) -> Gateway:
        settings = ClusterSettings(node_id=name, lease_ttl_seconds=LEASE_TTL)
        config = gateway_config(
            tmp_path / name, postgres_url, cluster=settings, master_key_file=key_file
        )
        return Gateway(config)

    first, second = node("n1"), node("n2")
    await first.start()
    try:
        await second.start()  # a second node is welcome
        single = Gateway(gateway_config(tmp_path / "single", postgres_url))
        with pytest.raises(StoreInUse, match="every gateway on it runs with --cluster"):
            await single.start()
        await single.stop()
    finally:
        await second.stop(grace=0)
        await first.stop(grace=0)
    single = Gateway(gateway_config(tmp_path / "single-2", postgres_url))
    await single.start()
    try:
        third = node("n3")
        with pytest.raises(StoreInUse, match="a single-node zapgate serve already uses"):
            await third.start()
        await third.stop()
    finally:
        await single.stop(grace=0)


async def test_kill_9_of_a_node_moves_its_instances_to_another_without_a_qr(
    tmp_path: Path, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, postgres_url)
    try:
        cluster.start("a", *NO_HANDOVER)
        key = await cluster.new_key("acme")
        jids = await pair_on(cluster, "a", key)
        cluster.start("b", *NO_HANDOVER)
        cluster.start("c", *NO_HANDOVER)
        leases = await cluster.leases()
        assert {leases[i] for i in INSTANCES} == {("a", 1)}

        # A non-owner serves instance-bound calls by forwarding them to the owner
        # (tests/test_cluster_forwarding.py): the instances stay a's.
        async with client_of(cluster.nodes["b"], key) as client:
            stats = await client.instances.GetInstanceStats(
                pb.GetInstanceStatsRequest(instance_id="i0"), metadata=client.metadata
            )
        assert stats.HasField("stats")
        assert {(await cluster.leases())[i] for i in INSTANCES} == {("a", 1)}

        cursor = await last_cursor(cluster)
        cluster.nodes["a"].process.kill()
        await asyncio.to_thread(cluster.nodes["a"].wait)

        async def moved() -> bool:
            leases = await cluster.leases()
            owners = {leases.get(i, ("", 0))[0] for i in INSTANCES}
            if not owners <= {"b", "c"}:
                return False
            for owner in owners:
                mine = {i: jids[i] for i in INSTANCES if leases[i][0] == owner}
                if not await all_connected_on_subset(cluster, owner, key, mine):
                    return False
            return True

        took = await until(moved, "every instance CONNECTED on b or c")
        print(
            f"takeover of {len(INSTANCES)} instances after kill -9: {took:.1f}s (TTL {LEASE_TTL}s)"
        )
        leases = await cluster.leases()
        assert all(leases[i][1] == 2 for i in INSTANCES)  # one acquisition each, no ping-pong
        assert await qr_events_since(cluster, cursor) == 0
        async with client_of(cluster.nodes["b"], key) as client:
            for instance_id in INSTANCES:
                owner = cluster.nodes[leases[instance_id][0]]
                async with client_of(owner, key) as on_owner:
                    instance = await on_owner.get(instance_id)
                assert instance.state_reason == R.STATE_REASON_CONNECTED  # not PAIRED
            del client
    finally:
        cluster.close()


async def all_connected_on_subset(
    cluster: Cluster, node: str, key: str, jids: dict[str, str]
) -> bool:
    async with client_of(cluster.nodes[node], key) as client:
        for instance_id, jid in jids.items():
            instance = await client.get(instance_id)
            if instance.state != S.INSTANCE_STATE_CONNECTED:
                return False
            assert instance.jid == jid  # the same session, restored from its snapshot
    return True


async def test_a_node_paused_past_its_lease_is_fenced_and_stops_its_connections(
    tmp_path: Path, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, postgres_url)
    try:
        a = cluster.start("a", *NO_HANDOVER)
        key = await cluster.new_key("acme")
        jids = await pair_on(cluster, "a", key)
        cluster.start("b", *NO_HANDOVER)
        stale = FenceToken("a", 1)
        assert {(await cluster.leases())[i] for i in INSTANCES} == {("a", 1)}

        a.process.send_signal(signal.SIGSTOP)
        try:
            took = await until(
                lambda: all_connected_on(cluster, "b", key, jids), "b owns every instance"
            )
            print(f"takeover from a paused node: {took:.1f}s (TTL {LEASE_TTL}s)")
            # What the paused node would write when it wakes is refused by the store.
            engine = await open_database(postgres_url)
            try:
                instances = InstanceRepository(engine)
                with pytest.raises(Fenced):
                    await instances.update(
                        "acme", "i0", {"state": S.INSTANCE_STATE_DISCONNECTED}, fence=stale
                    )
                assert (await instances.require("acme", "i0")).state == S.INSTANCE_STATE_CONNECTED
            finally:
                await engine.dispose()
        finally:
            a.process.send_signal(signal.SIGCONT)

        # Awake, it must assume its leases lost and stop every connection at once.
        for _ in INSTANCES:
            a.wait_for(r"lost the lease of acme/i\d \(.*\): stopping its connection")
        by_id = "SELECT id, session_generation FROM instances ORDER BY id"  # rows move on update
        generations = await cluster.rows(by_id)
        await asyncio.sleep(LEASE_TTL)  # give a stale writer every chance to write
        assert await cluster.rows(by_id) == generations
        assert await all_connected_on(cluster, "b", key, jids)
        assert {(await cluster.leases())[i] for i in INSTANCES} == {("b", 2)}
        # And it knows it: it forwards callers to the new owner.
        async with client_of(a, key) as client:
            reconnected = await client.instances.Reconnect(
                pb.ReconnectRequest(instance_id="i0"), metadata=client.metadata
            )
        assert reconnected.instance.jid == jids["i0"]
        assert (await cluster.leases())["i0"] == ("b", 2)
    finally:
        cluster.close()


async def test_sigterm_hands_the_instances_and_their_queues_to_another_node(
    tmp_path: Path, postgres_url: str
) -> None:
    """A stopping node writes its last states under its leases, then frees them: another
    node connects the instances without a QR and sends what was queued; a subscriber on that
    node sees the stopped node's events and its own, in order."""
    cluster = Cluster(tmp_path, postgres_url)
    try:
        a = cluster.start("a", *NO_HANDOVER)
        key = await cluster.new_key("acme")
        jids = await pair_on(cluster, "a", key)
        b = cluster.start("b")
        async with client_of(a, key) as client:
            messenger = Messenger(client)
            await messenger.set_policy("i0", FAST_POLICY)
            await client.instances.PauseSending(
                pb.PauseSendingRequest(instance_id="i0", reason="held for the test"),
                metadata=client.metadata,
            )
            queued = await messenger.send_text("i0", "+5511988887777", "sent by the next owner")
        assert queued.state == M.MESSAGE_STATE_QUEUED

        async with grpc.aio.insecure_channel(b.address) as channel:
            stub = event_pb2_grpc.EventServiceStub(channel)
            stream = stub.Subscribe(
                event_pb2.SubscribeRequest(only_new=True, instance_ids=["i0"]),
                metadata=(("authorization", f"Bearer {key}"),),
            )
            await stream.initial_metadata()  # in place before anything happens
            seen: list[event_pb2.Event] = []

            async def follow() -> None:
                async for response in stream:
                    seen.append(response.event)

            following = asyncio.create_task(follow())
            try:
                a.terminate()
                assert await asyncio.to_thread(a.wait) == 0
                await until(
                    lambda: all_connected_on(cluster, "b", key, jids), "b owns every instance"
                )
                async with client_of(b, key) as client:
                    await client.instances.ResumeSending(
                        pb.ResumeSendingRequest(instance_id="i0"), metadata=client.metadata
                    )
                    sent = await Messenger(client).wait_message(
                        "i0", queued.id, lambda m: m.state == M.MESSAGE_STATE_SENT
                    )
                assert sent.state == M.MESSAGE_STATE_SENT

                def states() -> list[tuple[int, int]]:
                    return [
                        (e.state_changed.state, e.state_changed.reason)
                        for e in seen
                        if e.HasField("state_changed")
                    ]

                async def saw_both() -> bool:
                    return (S.INSTANCE_STATE_CONNECTED, R.STATE_REASON_CONNECTED) in states()

                await until(saw_both, "the subscriber on b saw i0 connected there")
            finally:
                following.cancel()
        history = states()
        stopped = history.index((S.INSTANCE_STATE_DISCONNECTED, R.STATE_REASON_SHUTDOWN))
        back = history.index((S.INSTANCE_STATE_CONNECTED, R.STATE_REASON_CONNECTED))
        assert stopped < back  # a's last word (under its lease), then b's
        assert not any(e.HasField("qr_updated") for e in seen)
        assert [e.cursor for e in seen] == sorted({e.cursor for e in seen})  # in order, once
        assert {(await cluster.leases())[i] for i in INSTANCES} == {("b", 2)}
    finally:
        cluster.close()
    stopping_log = "".join(a.log) + "".join(iter_queue(a))
    assert "no longer holds" not in stopping_log  # none of its final writes was fenced


def iter_queue(node: ServerProcess) -> list[str]:
    lines = []
    while not node.lines.empty():
        lines.append(node.lines.get_nowait())
    return lines


async def test_a_node_whose_lease_was_taken_stops_cleanly_and_writes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    """Its connection's last state is not written (another node owns the instance), and
    its shutdown still completes."""
    key_file = Cluster(tmp_path, postgres_url).key_file
    settings = ClusterSettings(node_id="n1", lease_ttl_seconds=30.0)
    async with started_gateway(
        tmp_path / "n1", database_url=postgres_url, cluster=settings, master_key_file=key_file
    ) as node:
        client = await SimClient.for_tenant(node, "acme")
        await client.create("i0")
        result = await client.pair("i0", "+5511955500000")
        assert result.outcome == pb.CONNECT_OUTCOME_CONNECTED
        engine = await open_database(postgres_url)
        try:
            leases = LeaseRepository(engine)
            await leases.release("n1", [("acme", "i0")])  # as if n1 had been paused...
            assert await leases.acquire("acme", "i0", "n2", 30.0) == 2  # ...and n2 took it
        finally:
            await engine.dispose()
    # Stopped (started_gateway stops it): no SHUTDOWN state was written for i0.
    engine = await open_database(postgres_url)
    try:
        record = await InstanceRepository(engine).require("acme", "i0")
    finally:
        await engine.dispose()
    assert record.state == S.INSTANCE_STATE_CONNECTED
    assert record.state_reason == R.STATE_REASON_PAIRED
