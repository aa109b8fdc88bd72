"""Helpers for messaging tests: a fast send policy and a client for MessageService."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from google.protobuf import field_mask_pb2

from tests.sim_client import SimClient
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import message_pb2_grpc
from zapgate.v1 import simulator_pb2 as spb

# Gaps of 50-150 ms, generous caps, no warm-up, no quiet hours, no typing.
FAST_POLICY = ipb.SendPolicy(
    min_gap_seconds=0.05,
    jitter_min_seconds=0.0,
    jitter_max_seconds=0.1,
    per_minute=10_000,
    per_hour=100_000,
    per_day=1_000_000,
    new_contacts_per_day=1_000_000,
    timezone="UTC",
    warmup_days=1,
    warmup_first_day_cap=1_000_000,
    typing=False,
    typing_chars_per_second=20,
    typing_max_seconds=1,
    number_checks_per_minute=1_000,
    number_checks_per_day=100_000,
)
# For tests that send a steady stream (chaos, crash): FAST_POLICY with shorter gaps.
STREAM_POLICY = ipb.SendPolicy()
STREAM_POLICY.CopyFrom(FAST_POLICY)
STREAM_POLICY.min_gap_seconds, STREAM_POLICY.jitter_max_seconds = 0.01, 0.02


class Messenger:
    def __init__(self, client: SimClient) -> None:
        self.client = client
        self.metadata = client.metadata
        self.stub = message_pb2_grpc.MessageServiceStub(client.channel)

    async def ready(
        self, instance_id: str, phone: str, policy: ipb.SendPolicy = FAST_POLICY
    ) -> None:
        """A connected instance with `policy`."""
        await self.client.create(instance_id)
        await self.set_policy(instance_id, policy)
        await self.client.pair(instance_id, phone)

    async def set_policy(self, instance_id: str, policy: ipb.SendPolicy) -> ipb.Instance:
        request = ipb.UpdateInstanceRequest(
            instance=ipb.Instance(id=instance_id, send_policy=policy),
            update_mask=field_mask_pb2.FieldMask(paths=["send_policy"]),
        )
        reply = await self.client.instances.UpdateInstance(request, metadata=self.metadata)
        return reply.instance

    async def send_text(
        self, instance_id: str, phone: str, body: str, **fields: object
    ) -> pb.Message:
        request = pb.SendMessageRequest(
            instance_id=instance_id, phone=phone, text=pb.Text(body=body), **fields
        )  # type: ignore[arg-type]
        return (await self.stub.SendMessage(request, metadata=self.metadata)).message

    async def all_messages(self, instance_id: str) -> list[pb.Message]:
        """Every message of the instance, page by page."""
        found: list[pb.Message] = []
        token = ""
        while True:
            request = pb.ListMessagesRequest(
                instance_id=instance_id, page_size=1000, page_token=token
            )
            page = await self.stub.ListMessages(request, metadata=self.metadata)
            found += list(page.messages)
            token = page.next_page_token
            if not token:
                return found

    async def get(self, instance_id: str, message_id: str) -> pb.Message:
        request = pb.GetMessageRequest(instance_id=instance_id, message_id=message_id)
        return (await self.stub.GetMessage(request, metadata=self.metadata)).message

    async def wait_message(
        self,
        instance_id: str,
        message_id: str,
        predicate: Callable[[pb.Message], bool],
        timeout: float = 30,
    ) -> pb.Message:
        deadline = time.monotonic() + timeout
        while True:
            message = await self.get(instance_id, message_id)
            if predicate(message):
                return message
            if time.monotonic() > deadline:
                raise AssertionError(f"message never matched; last seen:\n{message}")
            await asyncio.sleep(0.02)

    async def received(self, instance_id: str) -> list[spb.ReceivedMessage]:
        reply = await self.client.sim.ListReceived(
            spb.ListReceivedRequest(instance_id=instance_id), metadata=self.metadata
        )
        return list(reply.messages)
