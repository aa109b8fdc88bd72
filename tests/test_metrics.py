"""Prometheus metrics: a real gateway (simulator workers) scraped over HTTP on loopback while
real things happen to it; every value checked is one those actions must move."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningGateway, started_gateway
from tests.messaging import Messenger
from tests.sim_client import SimClient
from zapgate.gateway.config import ServeConfig
from zapgate.gateway.ops.metrics import pause_kind
from zapgate.gateway.ops.metrics_http import parse_listen
from zapgate.v1 import event_pb2, event_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

State = ipb.InstanceState
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGateway]:
    async with started_gateway(
        tmp_path_factory.mktemp("metrics"), metrics_listen="127.0.0.1:0", worker_ping_seconds=0.5
    ) as running:
        yield running


async def http_get(port: int, path: str, method: str = "GET") -> tuple[str, bytes]:
    """(status line, body) of one request: asyncio streams, since the gateway answering it
    runs on this very event loop."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def scrape(gateway: RunningGateway) -> Samples:
    assert gateway.gateway.metrics_server is not None
    status, body = await http_get(gateway.gateway.metrics_server.port, "/metrics")
    assert status == "HTTP/1.1 200 OK", status
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples that have at least these labels."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def until(
    gateway: RunningGateway, predicate: Callable[[Samples], bool], timeout: float = 30
) -> Samples:
    """Scrapes until `predicate` holds (the timeout only guards against hangs)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(gateway)
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError("metrics never matched")
        await asyncio.sleep(0.05)


def rpc(samples: Samples, method: str, code: str) -> float:
    return total(samples, "grpc_server_handled_total", grpc_method=method, grpc_code=code)


async def test_instances_rpcs_and_the_connection_lifecycle(gateway: RunningGateway) -> None:
    client = await SimClient.for_tenant(gateway, "metrics-life")
    before = await scrape(gateway)
    assert "zapgate_instances" in {name for name, _ in before}

    await client.create("life")
    with pytest.raises(grpc.aio.AioRpcError):
        await client.get("no-such-instance")
    anonymous = SimClient(gateway.channel, "zg_0000_not-a-key")
    with pytest.raises(grpc.aio.AioRpcError):
        await anonymous.get("life")
    after = await scrape(gateway)
    disconnected = value(after, "zapgate_instances", state="DISCONNECTED")
    assert disconnected == value(before, "zapgate_instances", state="DISCONNECTED") + 1
    assert rpc(after, "CreateInstance", "OK") == rpc(before, "CreateInstance", "OK") + 1
    assert rpc(after, "GetInstance", "NOT_FOUND") == rpc(before, "GetInstance", "NOT_FOUND") + 1
    unauthenticated = rpc(after, "GetInstance", "UNAUTHENTICATED")
    assert unauthenticated == rpc(before, "GetInstance", "UNAUTHENTICATED") + 1
    created = total(after, "grpc_server_handling_seconds_count", grpc_method="CreateInstance")
    assert created >= 1
    started = {"grpc_service": "zapgate.v1.InstanceService", "grpc_method": "CreateInstance"}
    assert value(after, "grpc_server_started_total", grpc_type="unary", **started) >= 1

    result = await client.pair("life", "+5511900000001")
    assert result.outcome == ipb.CONNECT_OUTCOME_CONNECTED
    paired = await until(
        gateway, lambda s: value(s, "zapgate_session_snapshot_age_max_seconds") > 0
    )
    assert value(paired, "zapgate_instances", state="CONNECTED") >= 1
    assert value(
        paired, "zapgate_instance_transitions_total", state="CONNECTED", reason="PAIRED"
    ) == 1 + value(before, "zapgate_instance_transitions_total", state="CONNECTED", reason="PAIRED")
    assert value(paired, "zapgate_sessions_watched") >= 1
    assert value(paired, "zapgate_sessions_polled") == 0  # inotify reports their writes
    assert total(paired, "grpc_server_handled_total", grpc_method="Connect", grpc_code="OK") >= 1

    # The phone drops the connection: the supervisor reconnects by itself.
    await client.sim.DropConnection(
        spb.DropConnectionRequest(instance_id="life"), metadata=client.metadata
    )
    reconnected = await until(
        gateway,
        lambda s: (
            value(s, "zapgate_instance_reconnects_total")
            > value(paired, "zapgate_instance_reconnects_total")
        ),
    )
    lost = {"state": "CONNECTING", "reason": "CONNECTION_LOST"}
    assert value(reconnected, "zapgate_instance_transitions_total", **lost) >= 1
    await client.wait_state("life", State.INSTANCE_STATE_CONNECTED)


async def test_a_killed_worker_counts_as_a_restart(gateway: RunningGateway) -> None:
    slot = gateway.gateway.runtime.pool.slots[0]
    before = await until(gateway, lambda s: value(s, "zapgate_engine_worker_up", worker="0") == 1)
    restarts = value(before, "zapgate_engine_worker_restarts_total", worker="0")
    assert slot.pid is not None
    os.kill(slot.pid, signal.SIGKILL)
    await until(
        gateway,
        lambda s: (
            value(s, "zapgate_engine_worker_restarts_total", worker="0") == restarts + 1
            and value(s, "zapgate_engine_worker_up", worker="0") == 1
        ),
    )


async def test_messages_queue_pauses_and_lateness(gateway: RunningGateway) -> None:
    messenger = Messenger(await SimClient.for_tenant(gateway, "metrics-send"))
    client = messenger.client
    await messenger.ready("sender", "+5511900000002")
    before = await scrape(gateway)

    sent = [await messenger.send_text("sender", f"+55119888800{i}", "hello") for i in range(2)]
    for message in sent:
        await messenger.wait_message(
            "sender", message.id, lambda m: m.state == mpb.MESSAGE_STATE_DELIVERED
        )
    after = await until(
        gateway,
        lambda s: (
            value(s, "zapgate_messages_total", state="DELIVERED")
            >= value(before, "zapgate_messages_total", state="DELIVERED") + 2
        ),
    )
    for state in ("QUEUED", "SENDING", "SENT", "DELIVERED"):
        moved = value(after, "zapgate_messages_total", state=state)
        assert moved >= value(before, "zapgate_messages_total", state=state) + 2, state
    lateness = value(after, "zapgate_scheduler_lateness_seconds_count")
    assert lateness >= value(before, "zapgate_scheduler_lateness_seconds_count") + 2

    # Paused by hand, a new message waits in the queue.
    await client.instances.PauseSending(
        ipb.PauseSendingRequest(instance_id="sender", reason="campaign review"),
        metadata=client.metadata,
    )
    waiting = await messenger.send_text("sender", "+5511988880099", "later")
    paused = await scrape(gateway)
    assert value(paused, "zapgate_sending_pauses_total", reason="manual") == 1 + value(
        before, "zapgate_sending_pauses_total", reason="manual"
    )
    assert value(paused, "zapgate_send_queue_depth") >= 1
    assert value(paused, "zapgate_instances_sending_paused") >= 1

    await client.instances.ResumeSending(
        ipb.ResumeSendingRequest(instance_id="sender"), metadata=client.metadata
    )
    await messenger.wait_message("sender", waiting.id, lambda m: m.state >= mpb.MESSAGE_STATE_SENT)
    await until(gateway, lambda s: value(s, "zapgate_send_queue_depth") == 0)


async def test_event_subscribers_are_counted_while_their_streams_are_open(
    gateway: RunningGateway,
) -> None:
    client = await SimClient.for_tenant(gateway, "metrics-events")
    stub = event_pb2_grpc.EventServiceStub(gateway.channel)
    before = value(await scrape(gateway), "zapgate_event_subscribers")
    streams = [
        stub.Subscribe(event_pb2.SubscribeRequest(only_new=True), metadata=client.metadata)
        for _ in range(2)
    ]
    await until(gateway, lambda s: value(s, "zapgate_event_subscribers") == before + 2)
    for stream in streams:
        stream.cancel()
    done = await until(gateway, lambda s: value(s, "zapgate_event_subscribers") == before)
    assert rpc(done, "Subscribe", "CANCELLED") >= 2


async def test_only_get_metrics_is_served(gateway: RunningGateway) -> None:
    server = gateway.gateway.metrics_server
    assert server is not None
    assert (await http_get(server.port, "/nothing"))[0] == "HTTP/1.1 404 Not Found"
    assert (await http_get(server.port, "/metrics", "POST"))[0].startswith("HTTP/1.1 405")
    status, body = await http_get(server.port, "/metrics", "HEAD")
    assert status == "HTTP/1.1 200 OK"
    assert body == b""


def test_metrics_are_off_by_default_and_on_loopback_for_a_bare_port() -> None:
    assert ServeConfig().metrics_listen is None
    assert parse_listen("9464") == ("127.0.0.1", 9464)
    assert parse_listen("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    with pytest.raises(ValueError, match="host:port"):
        parse_listen("localhost:http")


def test_pause_reasons_are_a_fixed_set_of_labels() -> None:
    assert pause_kind("temporary_ban_101") == "temporary_ban"
    assert pause_kind("send_errors") == "send_errors"
    assert pause_kind("logged_out") == "logged_out"
    assert pause_kind("anything a client typed") == "manual"


async def test_each_gateway_has_its_own_registry(gateway: RunningGateway, tmp_path: Path) -> None:
    """Two gateways in one process: neither sees the other's counts."""
    async with started_gateway(tmp_path, metrics_listen="127.0.0.1:0") as other:
        ours, theirs = gateway.gateway.runtime.metrics, other.gateway.runtime.metrics
        assert theirs.registry is not ours.registry
        fresh = await scrape(other)
        assert total(fresh, "grpc_server_handled_total", grpc_method="CreateInstance") == 0
        assert value(fresh, "zapgate_instances", state="CONNECTED") == 0
