"""What the chaos tests (one node, tests/test_chaos.py; a cluster, tests/test_cluster_chaos.py)
share: a subscriber that resumes by cursor wherever it can, and the checks made afterwards
(every event once and in order, nothing lost or sent twice, no QR after pairing, inbound
messages acknowledged exactly once)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from tests.sim_client import SimClient
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import event_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb

S = mpb.MessageState
IS = ipb.InstanceState
R = ipb.StateReason
FINAL = {
    S.MESSAGE_STATE_SENT,
    S.MESSAGE_STATE_DELIVERED,
    S.MESSAGE_STATE_READ,
    S.MESSAGE_STATE_DELIVERY_UNKNOWN,
}
SENT = {S.MESSAGE_STATE_SENT, S.MESSAGE_STATE_DELIVERED, S.MESSAGE_STATE_READ}
# docs/messages.md: the reasons a message may fail for; none applies here (every number is on
# WhatsApp, no send is refused), so any FAILED is reported.
DOCUMENTED_FAILURES = {
    "not_on_whatsapp",
    "463",
    "invalid_recipient",
    "invalid_content",
    "media_upload_failed",
    "engine_error",
}
# A call cut by a kill: retried (sends, with their idempotency key) or given up (injections).
CUT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}
# Receipts soon after each send, and logs without debug lines (they would flood the pipe).
QUICK_NODE_FLAGS = (
    "--sim-delivered-seconds",
    "0.1",
    "--sim-read-seconds",
    "0.3",
    "--log-level",
    "INFO",
)
WAIT = 120.0  # bounded waits only guard against hangs; nothing asserts on time


@dataclasses.dataclass
class Seen:
    """What one subscriber saw, in the order it saw it."""

    events: list[epb.Event] = dataclasses.field(default_factory=list)
    cursors: list[int] = dataclasses.field(default_factory=list)
    resumes: int = 0
    last_time: float = dataclasses.field(default_factory=time.monotonic)
    out_of_order: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    @property
    def last_cursor(self) -> int:
        return self.cursors[-1] if self.cursors else 0


async def subscribe(client_now: Callable[[], Awaitable[SimClient]], seen: Seen) -> None:
    """Follows the event log forever; when its stream breaks (its node died, paused or lost
    the database), resumes from the last cursor processed on whatever `client_now` gives."""
    while True:
        client = await client_now()
        stub = event_pb2_grpc.EventServiceStub(client.channel)
        request = epb.SubscribeRequest(from_cursor=seen.last_cursor)
        try:
            stream = stub.Subscribe(request, metadata=client.metadata)
            async for response in stream:
                event = response.event
                if event.cursor <= seen.last_cursor:
                    seen.out_of_order.append((seen.last_cursor, event.cursor))
                seen.events.append(event)
                seen.cursors.append(event.cursor)
                seen.last_time = time.monotonic()
        except grpc.aio.AioRpcError as error:
            if error.code() not in CUT:
                raise
        except grpc.aio.UsageError:
            pass
        seen.resumes += 1
        await asyncio.sleep(0.05)


async def replay(client: SimClient, until_cursor: int) -> list[epb.Event]:
    """Every event from cursor 0 up to `until_cursor`, read afresh."""
    stub = event_pb2_grpc.EventServiceStub(client.channel)
    stream = stub.Subscribe(epb.SubscribeRequest(from_cursor=0), metadata=client.metadata)
    events: list[epb.Event] = []
    async with asyncio.timeout(WAIT):
        async for response in stream:
            events.append(response.event)
            if response.event.cursor >= until_cursor:
                break
    stream.cancel()
    return events


def last_states(events: list[epb.Event]) -> dict[str, epb.StateChanged]:
    last: dict[str, epb.StateChanged] = {}
    for event in events:
        if event.HasField("state_changed"):
            last[event.instance_id] = event.state_changed
    return last


def check_subscriber(seen: Seen, full: list[epb.Event], who: str = "the subscriber") -> None:
    """Every event once, in cursor order, none missing (against a full replay), unchanged."""
    assert not seen.out_of_order, f"{who}: cursors went backwards: {seen.out_of_order[:10]}"
    assert len(set(seen.cursors)) == len(seen.cursors), f"{who} saw an event twice"
    assert [e.cursor for e in full] == seen.cursors, f"{who} missed or added events"
    assert [e.SerializeToString() for e in full] == [e.SerializeToString() for e in seen.events], (
        f"an event changed between its delivery to {who} and the replay"
    )


def check_messages(accepted_ids: list[str], messages: list[mpb.Message]) -> dict[str, mpb.Message]:
    """No message lost, none created twice, none failed, each in a final state; returns them
    by id."""
    by_id = {m.id: m for m in messages}
    accepted = set(accepted_ids)
    assert len(accepted) == len(accepted_ids), "two sends got one message"
    assert set(by_id) == accepted, (
        f"lost: {sorted(accepted - set(by_id))[:10]}, extra: {sorted(set(by_id) - accepted)[:10]}"
    )
    failed = [m for m in messages if m.state == S.MESSAGE_STATE_FAILED]
    assert all(m.failure_reason in DOCUMENTED_FAILURES for m in failed), failed[:5]
    assert not failed, f"sends failed: {collections.Counter(m.failure_reason for m in failed)}"
    assert all(m.state in FINAL for m in messages)
    return by_id


def check_message_events(messages: list[mpb.Message], events: list[epb.Event]) -> None:
    """Every message's state has its event (the last one for the message)."""
    last_message_event: dict[str, epb.MessageStateChanged] = {}
    for event in events:
        if event.HasField("message_state_changed"):
            last_message_event[event.message_state_changed.message_id] = event.message_state_changed
    assert not [m.id for m in messages if m.id not in last_message_event], "no event at all"
    wrong = [
        (m.id, S.Name(m.state), S.Name(last_message_event[m.id].state))
        for m in messages
        if last_message_event[m.id].state != m.state
    ]
    assert not wrong, f"message state without its event: {wrong[:10]}"


def check_no_qr_after(events: list[epb.Event], paired_cursor: int) -> None:
    """No QR after the first pairing: no QR codes, no PAIRING, every connect from the
    session."""
    later = [e for e in events if e.cursor > paired_cursor]
    assert not [e for e in later if e.HasField("qr_updated")], "a QR code after pairing"
    changes = [e.state_changed for e in later if e.HasField("state_changed")]
    assert all(c.state != IS.INSTANCE_STATE_PAIRING for c in changes)
    assert all(
        c.reason == R.STATE_REASON_CONNECTED
        for c in changes
        if c.state == IS.INSTANCE_STATE_CONNECTED
    )


def check_inbound(
    events: list[epb.Event], acknowledged: dict[str, object], unacknowledged: set[str]
) -> None:
    """Acknowledged inbound messages exactly once, ones cut by a fault at most once, nothing
    else. `acknowledged` maps message ids to what to print about them when one is missing."""
    inbound = collections.Counter(
        e.message_received.message_id for e in events if e.HasField("message_received")
    )
    missing = [m for m in acknowledged if inbound[m] != 1]
    assert not missing, (
        "acknowledged inbound messages seen other than once: "
        f"{[(m, inbound[m], acknowledged[m]) for m in missing][:10]}"
    )
    assert set(inbound) <= set(acknowledged) | unacknowledged
    assert max(inbound.values(), default=0) <= 1
