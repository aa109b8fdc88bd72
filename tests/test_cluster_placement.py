"""Placement across real `zapgate serve --cluster` nodes on one PostgreSQL: a joining node
receives its fair share by graceful hand-over (one short disconnect per moved instance, no
QR, a batch at a time), SIGTERM drains a node to the others before it exits, nodes never
exceed their maximum, and a new instance is connected on the least loaded node.

Everything is judged from the leases table, the event log and the nodes' logs, never from
how long something took."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_nodes import LEASE_TTL, Cluster, client_of, until
from tests.messaging import FAST_POLICY, Messenger
from tests.postgres import create_database
from tests.server_process import ServerProcess
from zapgate.v1 import event_pb2, message_pb2
from zapgate.v1 import instance_pb2 as pb

pytestmark = pytest.mark.postgres

S = pb.InstanceState
R = pb.StateReason
M = message_pb2.MessageState
# What a moved instance goes through, and nothing else: its old node's last word, then the
# new node's reconnect from the snapshot.
MOVED = [
    (S.INSTANCE_STATE_CONNECTING, R.STATE_REASON_HANDED_OVER),
    (S.INSTANCE_STATE_CONNECTING, R.STATE_REASON_RECONNECTING),
    (S.INSTANCE_STATE_CONNECTED, R.STATE_REASON_CONNECTED),
]

_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_place_{os.getpid()}_{next(_databases)}")


@pytest.fixture
def cluster_root(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, postgres_url)
    yield cluster
    cluster.close()


def names(count: int) -> list[str]:
    return [f"i{n}" for n in range(count)]


async def pair_on(cluster: Cluster, node: str, key: str, instance_ids: list[str]) -> None:
    async with client_of(cluster.nodes[node], key) as client:
        for n, instance_id in enumerate(instance_ids):
            await client.create(instance_id)
            result = await client.pair(instance_id, f"+55119444{n:05d}")
            assert result.outcome == pb.CONNECT_OUTCOME_CONNECTED

    async def snapshotted() -> bool:
        rows = await cluster.rows("SELECT count(*) FROM session_snapshots")
        return int(rows[0][0]) >= len(instance_ids)  # type: ignore[call-overload]

    await until(snapshotted, "every session snapshotted")


async def owners(cluster: Cluster) -> dict[str, str]:
    return {instance_id: owner for instance_id, (owner, _) in (await cluster.leases()).items()}


async def connected(cluster: Cluster) -> set[str]:
    rows = await cluster.rows(
        "SELECT id FROM instances WHERE state = :connected", connected=S.INSTANCE_STATE_CONNECTED
    )
    return {str(row[0]) for row in rows}


async def balanced(cluster: Cluster, instance_ids: list[str], expected: dict[str, int]) -> bool:
    owned = await owners(cluster)
    counts = {node: list(owned.values()).count(node) for node in expected}
    if counts != expected or not set(instance_ids) <= set(owned):
        return False
    return set(instance_ids) <= await connected(cluster)


async def state_history(cluster: Cluster, since: int) -> dict[str, list[tuple[int, int]]]:
    """Every instance's state changes after `since`, in log order."""
    rows = await cluster.rows(
        "SELECT instance_id, payload FROM events WHERE cursor > :since AND type = :type "
        "ORDER BY cursor",
        since=since,
        type=event_pb2.EVENT_TYPE_STATE_CHANGED,
    )
    history: dict[str, list[tuple[int, int]]] = {}
    for instance_id, payload in rows:
        change = event_pb2.Event.FromString(payload).state_changed  # type: ignore[arg-type]
        history.setdefault(str(instance_id), []).append((change.state, change.reason))
    return history


async def disconnects(cluster: Cluster, since: int) -> dict[str, float]:
    """Per moved instance, seconds from HANDED_OVER to CONNECTED again (for the report)."""
    rows = await cluster.rows(
        "SELECT instance_id, payload, time_us FROM events WHERE cursor > :since AND type = :type "
        "ORDER BY cursor",
        since=since,
        type=event_pb2.EVENT_TYPE_STATE_CHANGED,
    )
    left: dict[str, int] = {}
    gaps: dict[str, float] = {}
    for instance_id, payload, time_us in rows:
        change = event_pb2.Event.FromString(payload).state_changed  # type: ignore[arg-type]
        if change.reason == R.STATE_REASON_HANDED_OVER:
            left[str(instance_id)] = int(time_us)  # type: ignore[call-overload]
        elif change.state == S.INSTANCE_STATE_CONNECTED and str(instance_id) in left:
            gaps[str(instance_id)] = round((int(time_us) - left[str(instance_id)]) / 1e6, 2)  # type: ignore[call-overload]
    return gaps


async def qr_events_since(cluster: Cluster, since: int) -> int:
    rows = await cluster.rows(
        "SELECT count(*) FROM events WHERE cursor > :since AND type = :qr",
        since=since,
        qr=event_pb2.EVENT_TYPE_QR_UPDATED,
    )
    return int(rows[0][0])  # type: ignore[call-overload]


async def last_cursor(cluster: Cluster) -> int:
    rows = await cluster.rows("SELECT coalesce(max(cursor), 0) FROM events")
    return int(rows[0][0])  # type: ignore[call-overload]


def node_log(node: ServerProcess) -> str:
    while not node.lines.empty():
        node.log.append(node.lines.get_nowait())
    return "".join(node.log)


async def test_a_joining_node_receives_its_fair_share_by_graceful_hand_over(
    cluster_root: Cluster,
) -> None:
    cluster = cluster_root
    instance_ids = names(6)
    a = cluster.start("a", "--handover-batch", "2")
    key = await cluster.new_key("acme")
    await pair_on(cluster, "a", key, instance_ids)
    since = await last_cursor(cluster)

    cluster.start("b")
    await until(
        lambda: balanced(cluster, instance_ids, {"a": 3, "b": 3}), "a and b hold 3 each, CONNECTED"
    )
    await asyncio.sleep(LEASE_TTL)  # three more looks: a balanced cluster stays as it is
    assert await balanced(cluster, instance_ids, {"a": 3, "b": 3})

    leases = await cluster.leases()
    moved = {i for i in instance_ids if leases[i][0] == "b"}
    history = await state_history(cluster, since)
    for instance_id in instance_ids:
        if instance_id in moved:
            # One disconnect each, then connected on b with the same session.
            assert history.get(instance_id) == MOVED, instance_id
            assert leases[instance_id][1] == 2  # one hand-over, one claim
        else:
            assert history.get(instance_id) is None, instance_id  # untouched
            assert leases[instance_id] == ("a", 1)
    assert await qr_events_since(cluster, since) == 0
    gaps = await disconnects(cluster, since)
    print("hand-over disconnects (s, event times):", sorted(gaps.values()))  # not asserted
    # Paced: a batch of at most 2 per look.
    batches = [int(n) for n in re.findall(r"handing (\d+) instances over", node_log(a))]
    assert sum(batches) == 3
    assert max(batches) <= 2


async def test_sigterm_drains_a_node_to_the_other_live_node_before_it_exits(
    cluster_root: Cluster,
) -> None:
    cluster = cluster_root
    instance_ids = names(4)
    a = cluster.start("a", "--grace", "20")
    key = await cluster.new_key("acme")
    await pair_on(cluster, "a", key, instance_ids)
    cluster.start("b")
    await until(lambda: balanced(cluster, instance_ids, {"a": 2, "b": 2}), "2 and 2")
    kept = {i for i, owner in (await owners(cluster)).items() if owner == "a"}
    since = await last_cursor(cluster)

    a.terminate()
    assert await asyncio.to_thread(a.wait) == 0
    assert "drain: handed 2 of 2 instances over to other nodes" in node_log(a)
    await until(lambda: balanced(cluster, instance_ids, {"b": 4}), "b holds all 4, CONNECTED")

    history = await state_history(cluster, since)
    for instance_id in instance_ids:
        if instance_id in kept:
            assert history.get(instance_id) == MOVED, instance_id  # not SHUTDOWN: handed over
        else:
            assert history.get(instance_id) is None, instance_id  # b's own: untouched
    assert await qr_events_since(cluster, since) == 0
    assert {epoch for _, epoch in (await cluster.leases()).values()} == {2}
    assert await cluster.rows("SELECT id FROM nodes") == [("b",)]  # a left


async def test_a_node_never_takes_more_than_its_maximum_by_hand_over_or_drain(
    cluster_root: Cluster,
) -> None:
    cluster = cluster_root
    instance_ids = names(4)
    a = cluster.start("a", "--grace", "20")
    key = await cluster.new_key("acme")
    await pair_on(cluster, "a", key, instance_ids)
    cluster.start("b", "--max-instances", "1")
    await until(lambda: balanced(cluster, instance_ids, {"a": 3, "b": 1}), "b holds its 1")
    await asyncio.sleep(LEASE_TTL)  # three more looks: b stays at its maximum
    assert await balanced(cluster, instance_ids, {"a": 3, "b": 1})

    a.terminate()  # b is full: a's instances stop as without a drain
    assert await asyncio.to_thread(a.wait) == 0
    assert "drain: handed 0 of 3 instances over to other nodes" in node_log(a)
    assert list((await owners(cluster)).values()) == ["b"]
    rows = await cluster.rows(
        "SELECT count(*) FROM instances WHERE state = :stopped AND state_reason = :shutdown",
        stopped=S.INSTANCE_STATE_DISCONNECTED,
        shutdown=R.STATE_REASON_SHUTDOWN,
    )
    assert rows[0][0] == 3


async def test_a_new_instance_is_connected_on_the_least_loaded_node(
    cluster_root: Cluster,
) -> None:
    cluster = cluster_root
    a = cluster.start("a")
    cluster.start("b")
    key = await cluster.new_key("acme")
    await pair_on(cluster, "a", key, ["i0"])  # a tie: the node asked takes it
    assert (await cluster.leases())["i0"] == ("a", 1)

    async with client_of(a, key) as client:
        await client.create("i1")
        # a holds more than b: a reserves i1 for b and forwards the pairing there.
        result = await client.pair("i1", "+5511944400001")
    assert result.outcome == pb.CONNECT_OUTCOME_CONNECTED
    assert (await cluster.leases())["i1"] == ("b", 1)  # epoch 1: a never held it


async def test_a_handed_over_instance_keeps_its_send_caps_on_the_next_node(
    cluster_root: Cluster,
) -> None:
    """The counters are saved with the hand-over, under the lease: the next owner's
    scheduler starts from them, so an hour cap used up on a stays used up on b."""
    cluster = cluster_root
    a = cluster.start("a", "--grace", "20")
    key = await cluster.new_key("acme")
    policy = pb.SendPolicy()
    policy.CopyFrom(FAST_POLICY)
    policy.per_hour = 2
    async with client_of(a, key) as client:
        messenger = Messenger(client)
        await messenger.ready("i0", "+5511944400000", policy)
        for n in range(2):
            sent = await messenger.send_text("i0", "+5511988887777", f"hello {n}")
            done = await messenger.wait_message(
                "i0", sent.id, lambda m: m.state == M.MESSAGE_STATE_SENT
            )
            assert done.state == M.MESSAGE_STATE_SENT
    b = cluster.start("b")  # a holds 1, its fair share: nothing moves until a stops

    a.terminate()
    assert await asyncio.to_thread(a.wait) == 0
    assert "drain: handed 1 of 1 instances over to other nodes" in node_log(a)
    await until(lambda: balanced(cluster, ["i0"], {"b": 1}), "b holds i0, CONNECTED")
    async with client_of(b, key) as client:
        messenger = Messenger(client)
        third = await messenger.send_text("i0", "+5511988887777", "over the cap")
        held = await messenger.wait_message(
            "i0", third.id, lambda m: m.waiting_reason == message_pb2.WAITING_REASON_HOUR_CAP
        )
    assert held.state == M.MESSAGE_STATE_QUEUED
