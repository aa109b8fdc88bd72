"""API keys and tenant isolation on every RPC of the public API."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.message import Message

from tests.conftest import RunningGateway, auth
from tests.rpc import expect_error
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import instance_pb2_grpc

PUBLIC_SERVICES = [pb.DESCRIPTOR.services_by_name["InstanceService"]]
ALL_METHODS = [method for service in PUBLIC_SERVICES for method in service.methods]


def call(running: RunningGateway, method: object, request: Message, metadata: object) -> object:
    rpc = running.channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",  # type: ignore[attr-defined]
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message_factory.GetMessageClass(
            method.output_type  # type: ignore[attr-defined]
        ).FromString,
    )
    return rpc(request, metadata=metadata)


def empty_request(method: object) -> Message:
    return message_factory.GetMessageClass(method.input_type)()  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer garbage"),),
        (("authorization", "Bearer zg_0000000000000000_nope"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
    ],
    ids=["no-key", "garbage", "unknown-key", "wrong-scheme", "empty"],
)
async def test_every_rpc_rejects_missing_or_bad_keys(
    running: RunningGateway, method: object, metadata: object
) -> None:
    info, _ = await expect_error(
        call(running, method, empty_request(method), metadata),  # type: ignore[arg-type]
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert info.reason == "UNAUTHENTICATED"


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
async def test_every_rpc_rejects_a_revoked_key(running: RunningGateway, method: object) -> None:
    key = await running.new_key("acme")
    engine = await open_database(running.database_url)
    try:
        assert await ApiKeyRepository(engine).revoke(key.split("_")[1])
    finally:
        await engine.dispose()
    await expect_error(
        call(running, method, empty_request(method), auth(key)),  # type: ignore[arg-type]
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_tenant_b_cannot_see_or_touch_tenant_a(running: RunningGateway) -> None:
    stub = instance_pb2_grpc.InstanceServiceStub(running.channel)
    key_a, key_b = auth(await running.new_key("tenant-a")), auth(await running.new_key("tenant-b"))
    made = await stub.CreateInstance(
        pb.CreateInstanceRequest(instance_id="secret", display_name="A's"), metadata=key_a
    )

    cross_calls = {
        "GetInstance": stub.GetInstance(
            pb.GetInstanceRequest(instance_id="secret"), metadata=key_b
        ),
        "UpdateInstance": stub.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=pb.Instance(id="secret", display_name="stolen"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=key_b,
        ),
        "DeleteInstance": stub.DeleteInstance(
            pb.DeleteInstanceRequest(instance_id="secret"), metadata=key_b
        ),
    }
    for name, pending in cross_calls.items():
        info, _ = await expect_error(pending, grpc.StatusCode.NOT_FOUND)
        assert info.reason == "INSTANCE_NOT_FOUND", name
    listed = await stub.ListInstances(pb.ListInstancesRequest(), metadata=key_b)
    assert list(listed.instances) == []

    # Ids are unique per tenant: B may use the same id, and gets its own instance.
    own = await stub.CreateInstance(
        pb.CreateInstanceRequest(instance_id="secret", display_name="B's"), metadata=key_b
    )
    assert own.created
    seen_by_a = await stub.GetInstance(pb.GetInstanceRequest(instance_id="secret"), metadata=key_a)
    assert seen_by_a.instance == made.instance
    assert len(ALL_METHODS) == 5, "a new RPC needs a cross-tenant case here"
