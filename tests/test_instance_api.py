"""InstanceService over a real gRPC server on loopback."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.conftest import RunningGateway, auth
from tests.rpc import expect_error
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import instance_pb2_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT


class Client:
    def __init__(self, running: RunningGateway, key: str) -> None:
        self.stub = instance_pb2_grpc.InstanceServiceStub(running.channel)
        self.metadata = auth(key)

    async def create(self, **fields: object) -> pb.CreateInstanceResponse:
        return await self.stub.CreateInstance(
            pb.CreateInstanceRequest(**fields),
            metadata=self.metadata,  # type: ignore[arg-type]
        )

    async def get(self, instance_id: str) -> pb.Instance:
        response = await self.stub.GetInstance(
            pb.GetInstanceRequest(instance_id=instance_id), metadata=self.metadata
        )
        return response.instance

    async def list(self, **fields: object) -> pb.ListInstancesResponse:
        return await self.stub.ListInstances(
            pb.ListInstancesRequest(**fields),
            metadata=self.metadata,  # type: ignore[arg-type]
        )

    async def update(self, instance: pb.Instance, *paths: str) -> pb.Instance:
        response = await self.stub.UpdateInstance(
            pb.UpdateInstanceRequest(
                instance=instance, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
            metadata=self.metadata,
        )
        return response.instance

    async def delete(self, instance_id: str, allow_missing: bool = False) -> bool:
        response = await self.stub.DeleteInstance(
            pb.DeleteInstanceRequest(instance_id=instance_id, allow_missing=allow_missing),
            metadata=self.metadata,
        )
        return response.deleted


@pytest.fixture
async def client(running: RunningGateway, tenant: str) -> Client:
    return Client(running, await running.new_key(tenant))


async def test_create_get_delete_round_trip(client: Client) -> None:
    response = await client.create(
        instance_id="shop-1", display_name="Shop", phone="+5511999998888", labels={"team": "x"}
    )
    assert response.created
    made = response.instance
    assert (made.id, made.display_name, made.phone, dict(made.labels)) == (
        "shop-1",
        "Shop",
        "+5511999998888",
        {"team": "x"},
    )
    assert made.state == pb.INSTANCE_STATE_DISCONNECTED
    assert made.create_time.seconds > 0
    assert made.create_time == made.update_time
    assert await client.get("shop-1") == made
    assert await client.delete("shop-1")
    info, _ = await expect_error(client.get("shop-1"), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "INSTANCE_NOT_FOUND"
    assert info.metadata["instance_id"] == "shop-1"


async def test_generated_id_and_default_display_name(client: Client) -> None:
    made = (await client.create()).instance
    assert made.id.startswith("inst-")
    assert made.display_name == made.id
    other = (await client.create()).instance
    assert other.id != made.id


async def test_create_is_idempotent_with_identical_fields(client: Client) -> None:
    first = await client.create(instance_id="retry", phone="+15550001111", labels={"a": "1"})
    second = await client.create(instance_id="retry", phone="+15550001111", labels={"a": "1"})
    assert first.created
    assert not second.created
    assert second.instance == first.instance


async def test_create_with_different_fields_conflicts(client: Client) -> None:
    await client.create(instance_id="taken", display_name="One")
    info, _ = await expect_error(
        client.create(instance_id="taken", display_name="Two"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert info.reason == "INSTANCE_ALREADY_EXISTS"
    assert (await client.get("taken")).display_name == "One"


async def test_delete_missing_is_not_found_unless_allowed(client: Client) -> None:
    await expect_error(client.delete("ghost"), grpc.StatusCode.NOT_FOUND)
    assert await client.delete("ghost", allow_missing=True) is False


async def test_pagination_over_more_than_two_pages(client: Client) -> None:
    ids = [f"n{i:02d}" for i in range(23)]
    for instance_id in reversed(ids):
        await client.create(instance_id=instance_id)
    seen, token, pages = [], "", 0
    while True:
        page = await client.list(page_size=5, page_token=token)
        assert len(page.instances) <= 5
        seen += [i.id for i in page.instances]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert pages == 5


async def test_default_page_size_and_cap(client: Client) -> None:
    for n in range(3):
        await client.create(instance_id=f"c{n}")
    page = await client.list(page_size=5000)
    assert [i.id for i in page.instances] == ["c0", "c1", "c2"]
    assert page.next_page_token == ""


async def test_state_filter(client: Client, running: RunningGateway, tenant: str) -> None:
    for instance_id in ("a", "b", "c", "d"):
        await client.create(instance_id=instance_id)
    engine = await open_database(running.database_url)
    try:
        repo = InstanceRepository(engine)
        await repo.update(tenant, "b", {"state": pb.INSTANCE_STATE_CONNECTED})
        await repo.update(tenant, "d", {"state": pb.INSTANCE_STATE_CONNECTED})
    finally:
        await engine.dispose()
    connected = await client.list(state=pb.INSTANCE_STATE_CONNECTED, page_size=1)
    assert [i.id for i in connected.instances] == ["b"]
    rest = await client.list(
        state=pb.INSTANCE_STATE_CONNECTED, page_size=1, page_token=connected.next_page_token
    )
    assert [i.id for i in rest.instances] == ["d"]
    disconnected = await client.list(state=pb.INSTANCE_STATE_DISCONNECTED)
    assert [i.id for i in disconnected.instances] == ["a", "c"]
    _, violations = await expect_error(
        client.list(state=pb.INSTANCE_STATE_DISCONNECTED, page_token=connected.next_page_token),
        INVALID,
    )
    assert violations[0][0] == "page_token"


async def test_field_mask_update_changes_only_named_fields(client: Client) -> None:
    made = (
        await client.create(
            instance_id="upd", display_name="Old", phone="+15550001111", labels={"k": "v"}
        )
    ).instance
    change = pb.Instance(id="upd", display_name="New", phone="+15559999999", labels={"z": "1"})
    renamed = await client.update(change, "display_name")
    assert (renamed.display_name, renamed.phone, dict(renamed.labels)) == (
        "New",
        "+15550001111",
        {"k": "v"},
    )
    relabeled = await client.update(change, "labels", "phone")
    assert (relabeled.display_name, relabeled.phone, dict(relabeled.labels)) == (
        "New",
        "+15559999999",
        {"z": "1"},
    )
    assert relabeled.create_time == made.create_time
    assert relabeled.update_time.ToMicroseconds() > made.update_time.ToMicroseconds()
    cleared = await client.update(pb.Instance(id="upd"), "phone", "display_name")
    assert (cleared.phone, cleared.display_name) == ("", "upd")
    everything = await client.update(pb.Instance(id="upd", display_name="All"), "*")
    assert (everything.display_name, dict(everything.labels)) == ("All", {})


async def test_update_of_missing_instance_is_not_found(client: Client) -> None:
    await expect_error(
        client.update(pb.Instance(id="nope", display_name="x"), "display_name"),
        grpc.StatusCode.NOT_FOUND,
    )


BAD_CREATES = [
    ({"instance_id": "\u212aelvin"}, "instance_id"),  # the Kelvin sign is no ASCII K
    ({"instance_id": "-dash-first"}, "instance_id"),
    ({"instance_id": "x" * 65}, "instance_id"),
    ({"instance_id": "has space"}, "instance_id"),
    ({"phone": "5511999998888"}, "phone"),
    ({"phone": "+0123456789"}, "phone"),
    ({"phone": "+12"}, "phone"),
    ({"phone": "+1234567890123456"}, "phone"),
    ({"display_name": "n" * 129}, "display_name"),
    ({"display_name": "   "}, "display_name"),
    ({"display_name": "bell\x07"}, "display_name"),
    ({"labels": {"Bad Key": "v"}}, "labels[Bad Key]"),
    ({"labels": {"k": "v" * 257}}, "labels[k]"),
    ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_CREATES)
async def test_create_validation(client: Client, fields: dict[str, object], field: str) -> None:
    info, violations = await expect_error(client.create(**fields), INVALID)
    assert info.reason == "INVALID_ARGUMENT"
    assert [v[0] for v in violations] == [field]
    assert (await client.list()).instances == []


async def test_all_bad_fields_are_reported_at_once(client: Client) -> None:
    _, violations = await expect_error(
        client.create(instance_id="B@D", phone="123", display_name="x" * 200), INVALID
    )
    assert {v[0] for v in violations} == {"instance_id", "phone", "display_name"}


BAD_UPDATES = [
    (pb.Instance(id="ok", phone="nope"), ["phone"], "instance.phone"),
    (pb.Instance(id="ok", display_name="y" * 129), ["display_name"], "instance.display_name"),
    (pb.Instance(id="ok", labels={"9": "x"}), ["labels"], "instance.labels[9]"),
    (pb.Instance(id="ok"), [], "update_mask"),
    (pb.Instance(id="ok"), ["state"], "update_mask"),
    (pb.Instance(id="ok"), ["id"], "update_mask"),
    (pb.Instance(id="NOT OK"), ["display_name"], "instance.id"),
]


@pytest.mark.parametrize(("instance", "paths", "field"), BAD_UPDATES)
async def test_update_validation(
    client: Client, instance: pb.Instance, paths: list[str], field: str
) -> None:
    await client.create(instance_id="ok", display_name="Kept")
    _, violations = await expect_error(client.update(instance, *paths), INVALID)
    assert [v[0] for v in violations] == [field]
    assert (await client.get("ok")).display_name == "Kept"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"page_token": "!!not-base64!!"}, "page_token"),
        ({"page_token": "eyJ4IjogMX0"}, "page_token"),  # valid base64 JSON, wrong shape
        ({"page_size": -1}, "page_size"),
        ({"state": 42}, "state"),
    ],
)
async def test_list_validation(client: Client, fields: dict[str, object], field: str) -> None:
    _, violations = await expect_error(client.list(**fields), INVALID)
    assert [v[0] for v in violations] == [field]


@pytest.mark.parametrize("bad_id", ["", "\u212aelvin", "a/b"])
async def test_get_and_delete_validate_the_id(client: Client, bad_id: str) -> None:
    for call in (client.get(bad_id), client.delete(bad_id)):
        _, violations = await expect_error(call, INVALID)
        assert violations[0][0] == "instance_id"
