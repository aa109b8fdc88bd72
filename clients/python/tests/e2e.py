"""End-to-end check of the Python client against a running `zapgate serve --engine sim`.

    ZAPGATE_SERVER=127.0.0.1:50051 ZAPGATE_API_KEY=zg_... python clients/python/e2e.py

Creates an instance, pairs it through the simulator, sends a text, sees its receipt on the
event stream, resumes the stream from a cursor, and lists instances with a key scoped to the
new one. Run by .ci/run with the client installed on its own (without the server) through
clients/with-sim-server.sh.
"""

from __future__ import annotations

import asyncio
import os
import secrets

from google.protobuf import field_mask_pb2

from zapgate_client import Client
from zapgate_client.v1 import instance_pb2, key_pb2, message_pb2

PHONE, RECIPIENT = "+5511999990001", "+5511988887777"
RECEIPTS = (message_pb2.MESSAGE_STATE_DELIVERED, message_pb2.MESSAGE_STATE_READ)


async def fast_sends(client: Client, instance_id: str) -> None:
    """No gaps, quiet hours or typing: the defaults would hold a message for 30 s or more."""
    reply = await client.instances.GetInstance(
        instance_pb2.GetInstanceRequest(instance_id=instance_id)
    )
    policy = reply.instance.send_policy
    policy.min_gap_seconds, policy.jitter_min_seconds, policy.jitter_max_seconds = 0, 0, 0.1
    policy.typing = False
    policy.ClearField("quiet_start_hour")
    policy.ClearField("quiet_end_hour")
    await client.instances.UpdateInstance(
        instance_pb2.UpdateInstanceRequest(
            instance=instance_pb2.Instance(id=instance_id, send_policy=policy),
            update_mask=field_mask_pb2.FieldMask(paths=["send_policy"]),
        )
    )


async def receipt(client: Client, instance_id: str, message_id: str, after: int) -> int:
    """The cursor of the first receipt of `message_id` after cursor `after`."""
    events = client.subscribe(after, instance_ids=[instance_id])
    async for event in events:
        assert event.cursor > after, "a resumed stream replays only what follows its cursor"
        change = event.message_state_changed
        if change.message_id == message_id and change.state in RECEIPTS:
            print(f"cursor {event.cursor}: {message_pb2.MessageState.Name(change.state)}")
            await events.aclose()
            return event.cursor
    raise AssertionError("the event stream ended")


async def main() -> None:
    instance_id = f"py-e2e-{secrets.token_hex(4)}"
    async with Client(os.environ["ZAPGATE_SERVER"], os.environ["ZAPGATE_API_KEY"]) as client:
        print("health:", await client.health(timeout=10))
        request = instance_pb2.CreateInstanceRequest(instance_id=instance_id)
        await client.instances.CreateInstance(request)
        await fast_sends(client, instance_id)
        result = await client.pair_simulated(instance_id, PHONE)  # Connect's QR, then ScanQr
        assert result.outcome == instance_pb2.CONNECT_OUTCOME_CONNECTED, result
        message = await client.send_text(
            instance_id, RECIPIENT, "{Hi|Hello} {name}!", variables={"name": "Ana"}
        )
        print(f"queued {message.id}")
        delivered = await receipt(client, instance_id, message.id, after=0)
        read = await receipt(client, instance_id, message.id, after=delivered)  # resumed
        assert read > delivered
        await scoped_key_sees_only_its_instance(client, instance_id)
    print("python client e2e: ok")


async def scoped_key_sees_only_its_instance(client: Client, instance_id: str) -> None:
    made = await client.keys.CreateKey(
        key_pb2.CreateKeyRequest(role=key_pb2.KEY_ROLE_VIEWER, instance_ids=[instance_id])
    )
    async with Client(os.environ["ZAPGATE_SERVER"], made.secret) as viewer:
        listed = [instance.id async for instance in viewer.list_instances()]
        assert listed == [instance_id], listed
    await client.keys.RevokeKey(key_pb2.RevokeKeyRequest(key_id=made.key.id))


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 120))
