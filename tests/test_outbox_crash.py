"""kill -9 of the whole gateway with 200 messages queued: after a restart every message is sent
exactly once or ends DELIVERY_UNKNOWN; none is lost, none reaches a phone twice."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import grpc.aio

from tests.messaging import STREAM_POLICY, Messenger
from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from tests.test_sessions_at_rest import SERVER_FLAGS, make_key
from zapgate.v1 import message_pb2 as pb

S = pb.MessageState
DONE = {S.MESSAGE_STATE_SENT, S.MESSAGE_STATE_DELIVERED, S.MESSAGE_STATE_READ}


async def test_kill_9_with_200_queued_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        key = await make_key(data_dir, "acme")
        async with grpc.aio.insecure_channel(first.address) as channel:
            messenger = Messenger(SimClient(channel, key))
            await messenger.ready("bulk", "+5511950000000", STREAM_POLICY)
            for n in range(200):
                await messenger.send_text("bulk", f"+55119600002{n % 20:02d}", f"message {n}")
            while len(await messenger.received("bulk")) < 40:
                await asyncio.sleep(0.01)
        first.process.kill()  # kill -9 mid-stream
        await asyncio.to_thread(first.wait)
    finally:
        first.close()

    second = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            messenger = Messenger(SimClient(channel, key))
            for _ in range(3000):
                messages = await messenger.all_messages("bulk")
                pending = [
                    m
                    for m in messages
                    if m.state in (S.MESSAGE_STATE_QUEUED, S.MESSAGE_STATE_SENDING)
                ]
                if not pending:
                    break
                await asyncio.sleep(0.02)
            received = [r.text for r in await messenger.received("bulk") if r.kind == "text"]
    finally:
        second.close()

    assert len(messages) == 200
    states = collections.Counter(pb.MessageState.Name(m.state) for m in messages)
    assert set(states) <= {
        "MESSAGE_STATE_SENT",
        "MESSAGE_STATE_DELIVERED",
        "MESSAGE_STATE_READ",
        "MESSAGE_STATE_DELIVERY_UNKNOWN",
    }, states
    copies = collections.Counter(received)
    assert max(copies.values()) == 1, "a phone received a message twice"
    by_text = {f"message {n}" for n in range(200)}
    assert set(received) <= by_text
    done = {m.id for m in messages if m.state in DONE}
    assert len(done) + states["MESSAGE_STATE_DELIVERY_UNKNOWN"] == 200
    assert len(received) >= len(done)  # every sent one arrived, once
