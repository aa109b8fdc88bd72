"""Cluster mode and the shared event log, with real `zapgate serve --cluster` nodes on one
PostgreSQL: a subscriber on one node is woken by another node's append through
LISTEN/NOTIFY (not by a poll), and each webhook is delivered by exactly one node at a time,
the webhooks spread over the nodes, and a node killed with -9 hands its webhooks to the
others with no gap in any of them."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster_nodes import LEASE_TTL, Cluster, until
from tests.conftest import auth
from tests.postgres import create_database
from tests.server_process import ServerProcess
from tests.webhook_receiver import Receiver
from zapgate.v1 import event_pb2, event_pb2_grpc, instance_pb2_grpc, webhook_pb2, webhook_pb2_grpc
from zapgate.v1 import instance_pb2 as pb

METRICS = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")
PAUSED = event_pb2.EVENT_TYPE_SENDING_PAUSED

_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_events_{os.getpid()}_{next(_databases)}")


def start_node(cluster: Cluster, name: str) -> tuple[ServerProcess, int]:
    """A node serving metrics and allowing webhooks to loopback; returns it and its
    metrics port."""
    node = cluster.start(name, "--metrics-listen", "127.0.0.1:0", "--webhook-allow-private")
    return node, int(node.wait_for(METRICS).group(1))


async def wakeups(metrics_port: int, source: str) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    body = response.partition(b"\r\n\r\n")[2].decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "zapgate_event_wakeups_total" and sample.labels == {"source": source}:
                return float(sample.value)
    return 0.0


@asynccontextmanager
async def stubs(
    node: ServerProcess,
) -> AsyncIterator[tuple[instance_pb2_grpc.InstanceServiceStub, grpc.aio.Channel]]:
    async with grpc.aio.insecure_channel(node.address) as channel:
        yield instance_pb2_grpc.InstanceServiceStub(channel), channel


async def pause(node: ServerProcess, key: str, instance_id: str, reason: str) -> None:
    """Appends one SendingPaused event on `node` (an instance no node serves: any node
    stores the pause and its event)."""
    async with stubs(node) as (instances, _):
        await instances.PauseSending(
            pb.PauseSendingRequest(instance_id=instance_id, reason=reason), metadata=auth(key)
        )


async def test_a_subscriber_is_woken_by_another_nodes_append_not_by_a_poll(
    tmp_path: Path, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, postgres_url)
    try:
        a, _ = start_node(cluster, "a")
        b, b_metrics = start_node(cluster, "b")
        key = await cluster.new_key("acme")
        async with stubs(a) as (instances, _):
            await instances.CreateInstance(
                pb.CreateInstanceRequest(instance_id="w0"), metadata=auth(key)
            )
        async with grpc.aio.insecure_channel(b.address) as channel:
            stream = event_pb2_grpc.EventServiceStub(channel).Subscribe(
                event_pb2.SubscribeRequest(only_new=True, types=[PAUSED]), metadata=auth(key)
            )
            await stream.initial_metadata()  # in place before anything is appended
            seen: list[tuple[str, float]] = []

            async def follow() -> None:
                async for response in stream:
                    seen.append((response.event.sending_paused.reason, time.monotonic()))

            following = asyncio.create_task(follow())
            latencies: dict[str, list[float]] = {"a": [], "b": []}
            try:
                notified_before = await wakeups(b_metrics, "notification")
                for n in range(10):
                    for name, node in (("a", a), ("b", b)):  # b's own: the baseline
                        reason = f"{name}-{n}"
                        appended = time.monotonic()
                        await pause(node, key, "w0", reason)

                        async def arrived(reason: str = reason) -> bool:
                            return any(r == reason for r, _ in seen)

                        await until(arrived, f"{reason} seen on b")
                        at = next(t for r, t in seen if r == reason)
                        latencies[name].append(at - appended)
                notified = await wakeups(b_metrics, "notification") - notified_before
            finally:
                following.cancel()
        expected = [f"{name}-{n}" for n in range(10) for name in ("a", "b")]
        assert [reason for reason, _ in seen] == expected  # every one, once, in order
        # a's ten commits each notified b (b's own commits notify it too).
        assert notified >= 10
        median_a = sorted(latencies["a"])[5]
        median_b = sorted(latencies["b"])[5]
        print(
            f"append -> subscriber on b: from node a median {median_a * 1000:.0f} ms, "
            f"from b itself {median_b * 1000:.0f} ms (ratio {median_a / median_b:.2f}); "
            f"{notified:.0f} notification wake-ups on b"
        )
    finally:
        cluster.close()


async def create_webhook(node: ServerProcess, key: str, url: str) -> str:
    async with grpc.aio.insecure_channel(node.address) as channel:
        reply = await webhook_pb2_grpc.WebhookServiceStub(channel).CreateWebhook(
            webhook_pb2.CreateWebhookRequest(webhook=webhook_pb2.Webhook(url=url, types=[PAUSED])),
            metadata=auth(key),
        )
    return reply.webhook.id


async def holders(cluster: Cluster) -> dict[str, tuple[str, int]]:
    """webhook id -> (node, epoch) of every unexpired webhook lease."""
    rows = await cluster.rows(
        "SELECT id, owner_node, lease_epoch FROM webhooks "
        "WHERE lease_expire_us > (extract(epoch from clock_timestamp()) * 1000000)::bigint"
    )
    return {str(row[0]): (str(row[1]), int(row[2])) for row in rows}  # type: ignore[call-overload]


async def paused_cursors(cluster: Cluster) -> list[int]:
    rows = await cluster.rows("SELECT cursor FROM events WHERE type = :t ORDER BY cursor", t=PAUSED)
    return [int(row[0]) for row in rows]  # type: ignore[call-overload]


def delivered_ids(receiver: Receiver) -> Counter[str]:
    return Counter(request.headers["webhook-id"] for request in receiver.accepted)


async def test_each_webhook_is_delivered_by_one_node_and_a_kill_9_hands_it_over(
    tmp_path: Path, postgres_url: str
) -> None:
    cluster = Cluster(tmp_path, postgres_url)
    receivers = [Receiver() for _ in range(3)]
    try:
        for receiver in receivers:
            await receiver.__aenter__()
        nodes = {name: start_node(cluster, name)[0] for name in ("a", "b")}
        key = await cluster.new_key("acme")
        async with stubs(nodes["a"]) as (instances, _):
            for name in ("a", "b", "c"):
                await instances.CreateInstance(
                    pb.CreateInstanceRequest(instance_id=f"on-{name}"), metadata=auth(key)
                )
        hooks = [await create_webhook(nodes["a"], key, r.url) for r in receivers]

        async def spread() -> bool:  # each node delivers its fair share (rounded up) at most
            held = await holders(cluster)
            per_node = Counter(node for node, _ in held.values())
            fair = -(-len(hooks) // len(nodes))
            return len(held) == len(hooks) and max(per_node.values()) <= fair

        await until(spread, "the webhooks spread over a and b")
        for n in range(5):  # appended on every node while every node lives
            for name, node in nodes.items():
                await pause(node, key, f"on-{name}", f"{name}-{n}")
        # A node joins: it receives its share, handed over by a loaded node.
        # (in a thread: the receivers answer on this event loop meanwhile)
        nodes["c"] = (await asyncio.to_thread(start_node, cluster, "c"))[0]
        await until(spread, "each of a, b and c delivers one webhook")
        for n in range(5, 10):
            for name, node in nodes.items():
                await pause(node, key, f"on-{name}", f"{name}-{n}")
        cursors = await paused_cursors(cluster)
        assert len(cursors) == 25
        for receiver in receivers:
            await receiver.wait_accepted(len(cursors), timeout=60)
        await asyncio.sleep(1.0)  # room for a second node's duplicate, were there one
        for receiver in receivers:  # each once (hand-overs included), in cursor order
            assert delivered_ids(receiver) == Counter(f"evt_{c}" for c in cursors)
            order = [int(r.headers["webhook-id"][4:]) for r in receiver.accepted]
            assert order == cursors

        # kill -9 the node delivering the first webhook: another takes it over.
        before = await holders(cluster)
        victim, epoch = before[hooks[0]]
        nodes[victim].process.kill()
        await asyncio.to_thread(nodes[victim].wait)
        survivors = {name: node for name, node in nodes.items() if name != victim}

        async def taken_over() -> bool:
            owner = (await holders(cluster)).get(hooks[0])
            return owner is not None and owner[0] in survivors

        took = await until(taken_over, "a survivor delivers the dead node's webhook")
        for n in range(10, 15):
            for name, node in survivors.items():
                await pause(node, key, f"on-{name}", f"{name}-{n}")
        cursors = await paused_cursors(cluster)
        for receiver in receivers:
            await receiver.wait_until(
                lambda r=receiver: set(delivered_ids(r)) >= {f"evt_{c}" for c in cursors}, 60
            )
        after = await holders(cluster)
        assert after[hooks[0]] == (after[hooks[0]][0], epoch + 1)  # one acquisition
        for webhook_id, receiver in zip(hooks, receivers, strict=True):
            ids = delivered_ids(receiver)
            assert set(ids) == {f"evt_{c}" for c in cursors}  # no gap
            # At least once: only what the dead node delivered and had not committed yet
            # may come twice; a live holder never repeats one.
            twice = {i for i, count in ids.items() if count > 1}
            if after[webhook_id][0] == before[webhook_id][0]:
                assert not twice
        print(
            f"webhook takeover after kill -9: {took:.1f}s (TTL {LEASE_TTL}s); "
            f"redelivered {sum(c - 1 for c in delivered_ids(receivers[0]).values())} events"
        )
    finally:
        for name, node in cluster.nodes.items():  # what each node did with webhooks, to read
            while not node.lines.empty():
                line = node.lines.get_nowait()
                if "webhook" in line and "POST" not in line:
                    print(name, line.rstrip()[:300])
        cluster.close()
        for receiver in receivers:
            await receiver.close()


async def test_a_webhook_holder_paused_past_its_lease_never_delivers_when_it_wakes(
    tmp_path: Path, postgres_url: str
) -> None:
    """SIGSTOP of the delivering node: the other node takes the webhook over from the
    committed cursor; woken by SIGCONT, the paused node knows its lease lapsed and sends
    nothing, so every event still reaches the receiver exactly once."""
    cluster = Cluster(tmp_path, postgres_url)
    receiver = Receiver()
    try:
        await receiver.__aenter__()
        nodes = {name: start_node(cluster, name)[0] for name in ("a", "b")}
        key = await cluster.new_key("acme")
        async with stubs(nodes["a"]) as (instances, _):
            await instances.CreateInstance(
                pb.CreateInstanceRequest(instance_id="w0"), metadata=auth(key)
            )
        hook = await create_webhook(nodes["a"], key, receiver.url)

        async def held() -> bool:
            return hook in await holders(cluster)

        await until(held, "a node delivers the webhook")
        holder, epoch = (await holders(cluster))[hook]
        other = next(name for name in nodes if name != holder)
        for n in range(3):
            await pause(nodes[holder], key, "w0", f"before-{n}")
        await receiver.wait_accepted(3, timeout=60)
        last = (await paused_cursors(cluster))[-1]

        async def committed() -> bool:
            rows = await cluster.rows("SELECT cursor FROM webhooks WHERE id = :id", id=hook)
            return int(rows[0][0]) == last  # type: ignore[call-overload]

        await until(committed, "the cursor committed")

        nodes[holder].process.send_signal(signal.SIGSTOP)
        try:
            for n in range(3):
                await pause(nodes[other], key, "w0", f"paused-{n}")

            async def moved() -> bool:
                return (await holders(cluster)).get(hook, ("", 0))[0] == other

            await until(moved, "the other node delivers the webhook")
            await receiver.wait_accepted(6, timeout=60)
        finally:
            nodes[holder].process.send_signal(signal.SIGCONT)
        for n in range(3):  # appended on the woken node: delivered by the other one
            await pause(nodes[holder], key, "w0", f"after-{n}")
        await receiver.wait_accepted(9, timeout=60)
        nodes[holder].wait_for(r"no longer delivering webhook acme/wh_\w+: its (lease|renewal)")
        await asyncio.sleep(1.0)  # room for a stale POST, were there one
        cursors = await paused_cursors(cluster)
        assert delivered_ids(receiver) == Counter(f"evt_{c}" for c in cursors)
        assert (await holders(cluster))[hook] == (other, epoch + 1)
    finally:
        cluster.close()
        await receiver.close()
