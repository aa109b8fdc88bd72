"""Instance ids are case-insensitive: every RPC reads an id's capitals as lower case, so a
SaaS that generates upper-case UUIDs reaches the same instance however it spells the id."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.conftest import RunningGateway
from tests.messaging import FAST_POLICY, Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_events import subscribe, take
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb


@pytest.fixture
async def messenger(running: RunningGateway, tenant: str) -> Messenger:
    return Messenger(await SimClient.for_tenant(running, tenant))


async def test_an_upper_case_id_names_the_lower_case_instance(messenger: Messenger) -> None:
    client = messenger.client
    created = await client.instances.CreateInstance(
        ipb.CreateInstanceRequest(instance_id="Sales-ABC"), metadata=messenger.metadata
    )
    assert created.created
    assert created.instance.id == "sales-abc"
    assert created.instance.display_name == "sales-abc"
    again = await client.instances.CreateInstance(
        ipb.CreateInstanceRequest(instance_id="sales-abc"), metadata=messenger.metadata
    )
    assert not again.created  # one instance, however it is spelled

    assert (await client.get("SALES-abc")).id == "sales-abc"
    update = ipb.UpdateInstanceRequest(
        instance=ipb.Instance(id="SALES-ABC", display_name="Sales"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    updated = await client.instances.UpdateInstance(update, metadata=messenger.metadata)
    assert (updated.instance.id, updated.instance.display_name) == ("sales-abc", "Sales")

    await messenger.set_policy("Sales-abc", FAST_POLICY)
    paired = await client.pair("SALES-ABC", "+5511930000001")
    assert paired.instance.id == "sales-abc"
    sent = await messenger.send_text("SALES-abc", "+5511930000002", "oi")
    assert sent.instance_id == "sales-abc"
    read = await messenger.wait_message(
        "Sales-Abc", sent.id, lambda m: m.state == mpb.MESSAGE_STATE_READ
    )
    assert read.instance_id == "sales-abc"

    events = subscribe(
        messenger, instance_ids=["SALES-ABC"], types=[epb.EVENT_TYPE_MESSAGE_STATE_CHANGED]
    )
    assert {e.instance_id for e in await take(events, 5)} == {"sales-abc"}

    listed = await client.instances.ListInstances(
        ipb.ListInstancesRequest(), metadata=messenger.metadata
    )
    assert [i.id for i in listed.instances] == ["sales-abc"]


async def test_ids_outside_ascii_stay_invalid(messenger: Messenger) -> None:
    # Unicode would lower the Kelvin sign to "k"; only ASCII capitals are read as lower case.
    _, violations = await expect_error(
        messenger.client.get("\u212aelvin"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [field for field, _ in violations] == ["instance_id"]
