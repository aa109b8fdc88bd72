"""The durable event stream: replay from a cursor, live, resumable, isolated, retained."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from tests.test_sessions_at_rest import make_key
from zapgate.gateway.events.log import Retention
from zapgate.v1 import event_pb2 as pb
from zapgate.v1 import event_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb


@pytest.fixture
async def messenger(running: RunningGateway, tenant: str) -> Messenger:
    return Messenger(await SimClient.for_tenant(running, tenant))


def subscribe(messenger: Messenger, **fields: object) -> AsyncIterator[pb.SubscribeResponse]:
    stub = event_pb2_grpc.EventServiceStub(messenger.client.channel)
    return stub.Subscribe(pb.SubscribeRequest(**fields), metadata=messenger.metadata)  # type: ignore[arg-type,return-value]


async def subscribed(messenger: Messenger, **fields: object) -> AsyncIterator[pb.SubscribeResponse]:
    """A subscription already in place (its response headers came): nothing appended after
    this returns is missed, even with `only_new`."""
    stream = subscribe(messenger, **fields)
    await stream.initial_metadata()  # type: ignore[attr-defined]
    return stream


async def take(stream: AsyncIterator[pb.SubscribeResponse], count: int) -> list[pb.Event]:
    events = []
    async for response in stream:
        events.append(response.event)
        if len(events) == count:
            break
    stream.cancel()  # type: ignore[attr-defined]
    return events


async def test_replay_then_live_then_resume_from_the_last_cursor(messenger: Messenger) -> None:
    await messenger.ready("ev", "+5511940000001")
    replayed = await take(subscribe(messenger), 4)
    assert [e.WhichOneof("payload") for e in replayed] == [
        "state_changed",
        "state_changed",
        "qr_updated",
        "state_changed",
    ]
    assert [replayed[i].state_changed.state for i in (0, 1, 3)] == [
        ipb.INSTANCE_STATE_CONNECTING,
        ipb.INSTANCE_STATE_PAIRING,
        ipb.INSTANCE_STATE_CONNECTED,
    ]
    cursors = [e.cursor for e in replayed]
    assert cursors == sorted(cursors)
    assert all(e.instance_id == "ev" for e in replayed)

    resumed = await take(subscribe(messenger, from_cursor=cursors[1]), 2)
    assert [e.cursor for e in resumed] == cursors[2:4]  # exactly the rest, in order

    live = subscribe(messenger, only_new=True, types=[pb.EVENT_TYPE_MESSAGE_STATE_CHANGED])
    headers = dict(await live.initial_metadata())  # type: ignore[attr-defined]
    assert int(headers["zapgate-start-cursor"]) >= cursors[-1]  # only what comes after
    sent = await messenger.send_text("ev", "+5511940000099", "hello")
    states = [e.message_state_changed.state for e in await take(live, 5)]
    assert states == [
        mpb.MESSAGE_STATE_QUEUED,
        mpb.MESSAGE_STATE_SENDING,
        mpb.MESSAGE_STATE_SENT,
        mpb.MESSAGE_STATE_DELIVERED,
        mpb.MESSAGE_STATE_READ,
    ]
    assert sent.id


async def test_pause_and_resume_are_events_with_their_reason(messenger: Messenger) -> None:
    await messenger.client.create("pauses")
    stream = await subscribed(messenger, only_new=True, instance_ids=["pauses"])
    await messenger.client.instances.PauseSending(
        ipb.PauseSendingRequest(instance_id="pauses", reason="campaign review"),
        metadata=messenger.metadata,
    )
    await messenger.client.instances.ResumeSending(
        ipb.ResumeSendingRequest(instance_id="pauses"), metadata=messenger.metadata
    )
    paused, resumed = await take(stream, 2)
    assert paused.sending_paused.reason == "campaign review"
    assert resumed.WhichOneof("payload") == "sending_resumed"


async def test_a_tenant_never_sees_another_tenants_events(
    messenger: Messenger, running: RunningGateway
) -> None:
    await messenger.client.create("private")
    other = Messenger(SimClient(running.channel, await running.new_key("other-tenant")))
    stream = subscribe(other, instance_ids=["private"])
    await other.client.create("mine")
    await other.client.instances.PauseSending(
        ipb.PauseSendingRequest(instance_id="mine"), metadata=other.metadata
    )
    await messenger.client.instances.PauseSending(
        ipb.PauseSendingRequest(instance_id="private"), metadata=messenger.metadata
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(take(stream, 1), 0.5)
    everything = await take(subscribe(other), 1)
    assert everything[0].instance_id == "mine"


async def test_many_subscribers_and_one_that_never_reads(messenger: Messenger) -> None:
    await messenger.client.create("fanout")
    stuck = await subscribed(messenger, only_new=True)  # never read from
    readers = [await subscribed(messenger, only_new=True) for _ in range(50)]
    for n in range(20):
        await messenger.client.instances.PauseSending(
            ipb.PauseSendingRequest(instance_id="fanout", reason=f"r{n}"),
            metadata=messenger.metadata,
        )
    results = await asyncio.wait_for(asyncio.gather(*(take(r, 20) for r in readers)), 60)
    for events in results:
        assert [e.sending_paused.reason for e in events] == [f"r{n}" for n in range(20)]
    stuck.cancel()  # type: ignore[attr-defined]


async def test_bad_requests(messenger: Messenger) -> None:
    for fields, field in (
        ({"from_cursor": -1}, "from_cursor"),
        ({"types": [99]}, "types"),
        ({"instance_ids": ["BAD ID"]}, "instance_ids"),
    ):
        _, violations = await expect_error(
            take(subscribe(messenger, **fields), 1), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert violations[0][0] == field


async def test_a_cursor_older_than_retention_is_out_of_range(
    running: RunningGateway, tenant: str
) -> None:
    messenger = Messenger(await SimClient.for_tenant(running, tenant))
    await messenger.client.create("old")
    log = running.gateway.runtime.events
    assert log is not None
    for n in range(5):
        await messenger.client.instances.PauseSending(
            ipb.PauseSendingRequest(instance_id="old", reason=f"r{n}"), metadata=messenger.metadata
        )
    first = (await take(subscribe(messenger, instance_ids=["old"]), 1))[0].cursor
    kept = log.retention
    log.retention = type(kept)(max_age_seconds=kept.max_age_seconds, max_events=2)
    try:
        await log.trim()
    finally:
        log.retention = kept
    info, _ = await expect_error(
        take(subscribe(messenger, from_cursor=first), 1), grpc.StatusCode.OUT_OF_RANGE
    )
    assert info.reason == "CURSOR_EXPIRED"
    assert int(info.metadata["oldest_cursor"]) == log.oldest > first


async def test_after_retention_emptied_the_log_old_cursors_are_out_of_range(
    running: RunningGateway, tenant: str
) -> None:
    messenger = Messenger(await SimClient.for_tenant(running, tenant))
    await messenger.client.create("emptied")
    for n in range(3):
        await messenger.client.instances.PauseSending(
            ipb.PauseSendingRequest(instance_id="emptied", reason=f"r{n}"),
            metadata=messenger.metadata,
        )
    held = await take(subscribe(messenger, instance_ids=["emptied"]), 3)
    log = running.gateway.runtime.events
    assert log is not None
    kept = log.retention
    log.retention = Retention(max_age_seconds=-3600.0)  # every event is too old
    try:
        await log.trim()
    finally:
        log.retention = kept
    info, _ = await expect_error(
        take(subscribe(messenger, from_cursor=held[0].cursor), 1), grpc.StatusCode.OUT_OF_RANGE
    )
    oldest = int(info.metadata["oldest_cursor"])
    assert oldest == log.oldest > held[-1].cursor  # the next cursor, not 1 again
    # Resuming as docs/events.md says streams the next event, above every earlier cursor.
    stream = await subscribed(messenger, from_cursor=oldest - 1, instance_ids=["emptied"])
    await messenger.client.instances.PauseSending(
        ipb.PauseSendingRequest(instance_id="emptied", reason="after"),
        metadata=messenger.metadata,
    )
    (after,) = await take(stream, 1)
    assert after.sending_paused.reason == "after"
    assert after.cursor >= oldest


async def test_resuming_across_a_server_restart_loses_and_repeats_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir)
    try:
        key = await make_key(data_dir, "acme")
        async with grpc.aio.insecure_channel(first.address) as channel:
            messenger = Messenger(SimClient(channel, key))
            await messenger.client.create("durable")
            for n in range(6):
                await messenger.client.instances.PauseSending(
                    ipb.PauseSendingRequest(instance_id="durable", reason=f"r{n}"),
                    metadata=messenger.metadata,
                )
            seen = await take(subscribe(messenger), 3)
        first.process.kill()
        await asyncio.to_thread(first.wait)
    finally:
        first.close()
    second = ServerProcess(data_dir)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            messenger = Messenger(SimClient(channel, key))
            rest = await take(subscribe(messenger, from_cursor=seen[-1].cursor), 3)
    finally:
        second.close()
    reasons = [e.sending_paused.reason for e in seen + rest]
    assert reasons == [f"r{n}" for n in range(6)]
