"""Worker processes die (kill -9, Go fatal errors); their instances come back without a QR."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import pytest

from tests.conftest import FAST_SIM, RunningGateway, gateway_config, started_gateway
from tests.messaging import Messenger
from tests.sim_client import SimClient
from zapgate.gateway.server import Gateway
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import message_pb2 as mpb

S = pb.InstanceState
R = pb.StateReason


@pytest.fixture
async def two_workers(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with started_gateway(tmp_path, engine_workers=2, worker_ping_seconds=0.5) as gateway:
        yield gateway


async def test_kill_9_of_a_worker_reconnects_all_its_instances_without_a_qr(
    two_workers: RunningGateway,
) -> None:
    client = await SimClient.for_tenant(two_workers, "acme")
    ids = [f"i{n:02d}" for n in range(20)]
    for n, instance_id in enumerate(ids):
        await client.create(instance_id)
        await client.pair(instance_id, f"+551190000{n:04d}")
    before = {i: await client.get(i) for i in ids}
    pool = two_workers.gateway.runtime.pool
    victim = pool.slots[0]
    victims = set(victim.keys)
    assert len(victims) == 10, "placement spreads instances over the workers"
    old_pid = victim.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    for key in sorted(victims):
        instance_id = key.split("/")[1]
        since = before[instance_id].state_change_time.ToMicroseconds()
        after = await client.wait_for(
            instance_id,
            lambda i, since=since: (
                i.state == S.INSTANCE_STATE_CONNECTED
                and i.state_change_time.ToMicroseconds() > since
            ),
        )
        assert after.jid == before[instance_id].jid
        assert after.state_reason == R.STATE_REASON_CONNECTED  # stored session, no QR
    for instance_id in ids:
        assert (await client.get(instance_id)).state == S.INSTANCE_STATE_CONNECTED
    assert victim.pid != old_pid
    assert victim.restarts == 1


async def test_a_server_restart_reconnects_from_the_runtime_dir(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    config = gateway_config(tmp_path, url)
    first = Gateway(config)
    await first.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        client = await SimClient.for_tenant(RunningGateway(first, channel, url), "acme")
        for n in range(3):
            await client.create(f"r{n}")
            await client.pair(f"r{n}", f"+55119000000{n}")
    await first.stop(grace=1)

    second = Gateway(config)
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            client = await SimClient.for_tenant(RunningGateway(second, channel, url), "acme")
            for n in range(3):
                back = await client.wait_state(f"r{n}", S.INSTANCE_STATE_CONNECTED)
                assert back.state_reason == R.STATE_REASON_CONNECTED
    finally:
        await second.stop(grace=1)


async def test_a_worker_that_stops_answering_is_replaced(two_workers: RunningGateway) -> None:
    pool = two_workers.gateway.runtime.pool
    slot = pool.slots[1]
    old_pid = slot.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGSTOP)  # alive but wedged, like a stuck Go runtime
    for _ in range(400):  # the pool pings every 0.5 s and kills after 3 misses
        if slot.pid != old_pid and slot.ready.is_set():
            break
        await asyncio.sleep(0.05)
    assert slot.pid != old_pid
    assert slot.restarts == 1


async def test_receipts_owed_when_a_worker_dies_arrive_after_the_reconnect(
    tmp_path: Path,
) -> None:
    # Receipts come a second after the send: the worker is killed well before.
    timings = dataclasses.replace(FAST_SIM, delivered_seconds=1.0, read_seconds=1.2)
    async with started_gateway(tmp_path, sim_timings=timings, worker_ping_seconds=0.5) as running:
        messenger = Messenger(await SimClient.for_tenant(running, "acme"))
        await messenger.ready("owed", "+5511900000777")
        queued = await messenger.send_text("owed", "+5511960000777", "hi")
        handed_off = {mpb.MESSAGE_STATE_QUEUED, mpb.MESSAGE_STATE_SENDING}
        sent = await messenger.wait_message("owed", queued.id, lambda m: m.state not in handed_off)
        assert sent.state == mpb.MESSAGE_STATE_SENT
        before = await messenger.client.get("owed")
        pool = running.gateway.runtime.pool
        [slot] = pool.slots
        assert slot.pid is not None
        os.kill(slot.pid, signal.SIGKILL)

        since = before.state_change_time.ToMicroseconds()
        back = await messenger.client.wait_for(
            "owed",
            lambda i: (
                i.state == S.INSTANCE_STATE_CONNECTED
                and i.state_change_time.ToMicroseconds() > since
            ),
        )
        assert back.state_reason == R.STATE_REASON_CONNECTED
        read = await messenger.wait_message(
            "owed", queued.id, lambda m: m.state == mpb.MESSAGE_STATE_READ
        )
        assert read.whatsapp_message_id == sent.whatsapp_message_id
        [received] = await messenger.received("owed")
        assert received.whatsapp_message_id == read.whatsapp_message_id  # sent once only
