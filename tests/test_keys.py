"""API keys with roles and instance scopes: KeyService, the listings a scoped key sees, and
keys made before roles existed (migration 0013)."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa

from tests.conftest import RunningGateway, auth
from tests.rpc import expect_error
from tests.test_event_cursors import at_revision
from zapgate.gateway.rpc.roles import Caller, Role
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import key_pb2 as kpb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1.event_pb2_grpc import EventServiceStub
from zapgate.v1.instance_pb2_grpc import InstanceServiceStub
from zapgate.v1.key_pb2_grpc import KeyServiceStub
from zapgate.v1.message_pb2_grpc import MessageServiceStub

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def admin(running: RunningGateway, tenant: str) -> Metadata:
    """An unscoped admin key of this test's own tenant."""
    return auth(await running.new_key(tenant))


async def make_key(
    running: RunningGateway,
    by: Metadata,
    role: kpb.KeyRole.ValueType,
    instance_ids: list[str] | None = None,
) -> kpb.CreateKeyResponse:
    return await KeyServiceStub(running.channel).CreateKey(
        kpb.CreateKeyRequest(role=role, instance_ids=instance_ids or [], description="test"),
        metadata=by,
    )


async def create_instances(running: RunningGateway, key: Metadata, *ids: str) -> None:
    for instance_id in ids:
        await InstanceServiceStub(running.channel).CreateInstance(
            ipb.CreateInstanceRequest(instance_id=instance_id), metadata=key
        )


async def test_create_list_and_revoke_keys(running: RunningGateway, admin: Metadata) -> None:
    keys = KeyServiceStub(running.channel)
    made = await make_key(running, admin, kpb.KEY_ROLE_SENDER, ["Shop", "desk"])
    assert made.key.role == kpb.KEY_ROLE_SENDER
    assert list(made.key.instance_ids) == ["desk", "shop"]  # lower case, sorted
    assert made.secret.startswith(f"zg_{made.key.id}_")
    assert not made.key.HasField("revoke_time")

    listed = await keys.ListKeys(kpb.ListKeysRequest(), metadata=admin)
    assert made.key in listed.keys
    assert made.secret.split("_")[2] not in str(listed)  # never a secret again

    # The new key works, as a sender of its instances: it may read one of them.
    await create_instances(running, admin, "shop")
    reply = await InstanceServiceStub(running.channel).GetInstance(
        ipb.GetInstanceRequest(instance_id="shop"), metadata=auth(made.secret)
    )
    assert reply.instance.id == "shop"

    revoked = await keys.RevokeKey(kpb.RevokeKeyRequest(key_id=made.key.id), metadata=admin)
    assert revoked.key.HasField("revoke_time")
    # Revoked through this gateway: refused at once (the auth cache forgets it).
    await expect_error(
        InstanceServiceStub(running.channel).GetInstance(
            ipb.GetInstanceRequest(instance_id="shop"), metadata=auth(made.secret)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    again = await keys.RevokeKey(kpb.RevokeKeyRequest(key_id=made.key.id), metadata=admin)
    assert again.key.revoke_time == revoked.key.revoke_time  # revoking twice changes nothing
    active = await keys.ListKeys(kpb.ListKeysRequest(), metadata=admin)
    assert made.key.id not in {k.id for k in active.keys}
    every = await keys.ListKeys(kpb.ListKeysRequest(include_revoked=True), metadata=admin)
    assert made.key.id in {k.id for k in every.keys}


async def test_list_keys_pages(running: RunningGateway, admin: Metadata) -> None:
    made = {(await make_key(running, admin, kpb.KEY_ROLE_VIEWER)).key.id for _ in range(5)}
    seen: list[str] = []
    request = kpb.ListKeysRequest(page_size=2)
    while True:
        page = await KeyServiceStub(running.channel).ListKeys(request, metadata=admin)
        assert len(page.keys) <= 2
        seen += [k.id for k in page.keys]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert made <= set(seen)
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == 6  # the five and the admin key itself


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({}, "role"),
        ({"role": 9}, "role"),
        ({"role": kpb.KEY_ROLE_VIEWER, "instance_ids": ["bad id"]}, "instance_ids"),
        ({"role": kpb.KEY_ROLE_VIEWER, "description": "x" * 201}, "description"),
    ],
)
async def test_create_key_rejects_bad_fields(
    running: RunningGateway, admin: Metadata, request_fields: dict[str, object], field: str
) -> None:
    create = KeyServiceStub(running.channel).CreateKey(
        kpb.CreateKeyRequest(**request_fields),  # type: ignore[arg-type]
        metadata=admin,
    )
    _, violations = await expect_error(create, grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in violations] == [field]


async def test_a_scoped_admin_never_grants_more_than_it_has(
    running: RunningGateway, admin: Metadata
) -> None:
    keys = KeyServiceStub(running.channel)
    scoped = auth((await make_key(running, admin, kpb.KEY_ROLE_ADMIN, ["a", "b"])).secret)
    for wider in ([], ["a", "c"], ["c"]):
        info, _ = await expect_error(
            make_key(running, scoped, kpb.KEY_ROLE_VIEWER, wider),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert info.reason == "PERMISSION_DENIED"
    inside = await make_key(running, scoped, kpb.KEY_ROLE_OPERATOR, ["b"])
    assert list(inside.key.instance_ids) == ["b"]

    # It sees and revokes only keys inside its scope; the others are NOT_FOUND to it.
    outside = await make_key(running, admin, kpb.KEY_ROLE_VIEWER, ["c"])
    unscoped = await make_key(running, admin, kpb.KEY_ROLE_VIEWER)
    listed = {k.id for k in (await keys.ListKeys(kpb.ListKeysRequest(), metadata=scoped)).keys}
    assert inside.key.id in listed
    assert listed.isdisjoint({outside.key.id, unscoped.key.id})
    for hidden in (outside.key.id, unscoped.key.id, "0000000000000000"):
        info, _ = await expect_error(
            keys.RevokeKey(kpb.RevokeKeyRequest(key_id=hidden), metadata=scoped),
            grpc.StatusCode.NOT_FOUND,
        )
        assert info.reason == "KEY_NOT_FOUND"
    await keys.RevokeKey(kpb.RevokeKeyRequest(key_id=inside.key.id), metadata=scoped)


async def test_keys_of_another_tenant_are_not_found(
    running: RunningGateway, admin: Metadata
) -> None:
    theirs = await make_key(running, auth(await running.new_key(f"t-{uuid.uuid4().hex[:8]}")), 1)
    listed = await KeyServiceStub(running.channel).ListKeys(kpb.ListKeysRequest(), metadata=admin)
    assert theirs.key.id not in {k.id for k in listed.keys}
    info, _ = await expect_error(
        KeyServiceStub(running.channel).RevokeKey(
            kpb.RevokeKeyRequest(key_id=theirs.key.id), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info.metadata["key_id"] == theirs.key.id


async def test_a_lower_role_cannot_manage_keys(running: RunningGateway, admin: Metadata) -> None:
    operator = auth((await make_key(running, admin, kpb.KEY_ROLE_OPERATOR)).secret)
    info, _ = await expect_error(
        make_key(running, operator, kpb.KEY_ROLE_VIEWER), grpc.StatusCode.PERMISSION_DENIED
    )
    assert (info.metadata["required_role"], info.metadata["role"]) == ("admin", "operator")


# ---- what a scoped key lists -----------------------------------------------------------


async def test_list_instances_shows_only_the_scope(
    running: RunningGateway, admin: Metadata
) -> None:
    await create_instances(running, admin, "one", "two", "three")
    # "four" does not exist yet: a scope may name instances to come.
    viewer = auth((await make_key(running, admin, kpb.KEY_ROLE_VIEWER, ["two", "four"])).secret)
    instances = InstanceServiceStub(running.channel)
    listed = await instances.ListInstances(ipb.ListInstancesRequest(), metadata=viewer)
    assert [i.id for i in listed.instances] == ["two"]
    await create_instances(running, admin, "four")
    listed = await instances.ListInstances(ipb.ListInstancesRequest(page_size=1), metadata=viewer)
    assert [i.id for i in listed.instances] == ["four"]
    rest = await instances.ListInstances(
        ipb.ListInstancesRequest(page_size=1, page_token=listed.next_page_token), metadata=viewer
    )
    assert [i.id for i in rest.instances] == ["two"]
    assert rest.next_page_token == ""
    everything = await instances.ListInstances(ipb.ListInstancesRequest(), metadata=admin)
    assert [i.id for i in everything.instances] == ["four", "one", "three", "two"]


async def test_subscribe_streams_only_the_scope(running: RunningGateway, admin: Metadata) -> None:
    await create_instances(running, admin, "hidden", "shown")
    instances = InstanceServiceStub(running.channel)
    for instance_id in ("hidden", "shown", "hidden"):
        await instances.PauseSending(
            ipb.PauseSendingRequest(instance_id=instance_id), metadata=admin
        )
        await instances.ResumeSending(
            ipb.ResumeSendingRequest(instance_id=instance_id), metadata=admin
        )
    viewer = auth((await make_key(running, admin, kpb.KEY_ROLE_VIEWER, ["shown"])).secret)
    events = EventServiceStub(running.channel)
    # Replayed from the start: without a filter, and asking for both, only "shown" comes.
    for asked in ([], ["hidden", "shown"]):
        stream = events.Subscribe(epb.SubscribeRequest(instance_ids=asked), metadata=viewer)
        seen = [(await stream.read()).event for _ in range(2)]  # type: ignore[union-attr]
        stream.cancel()
        assert [e.instance_id for e in seen] == ["shown", "shown"]
        assert [e.WhichOneof("payload") for e in seen] == ["sending_paused", "sending_resumed"]
    # Asking only for an instance outside the scope is no error (as for one that does not
    # exist): the stream opens, and the admin's stream shows what it would have missed.
    stream = events.Subscribe(epb.SubscribeRequest(instance_ids=["hidden"]), metadata=viewer)
    assert await stream.initial_metadata() is not None
    stream.cancel()
    everything = events.Subscribe(epb.SubscribeRequest(), metadata=admin)
    first = (await everything.read()).event  # type: ignore[union-attr]
    everything.cancel()
    assert first.instance_id == "hidden"


# ---- keys made before roles existed ------------------------------------------------------


async def test_keys_made_before_roles_become_unscoped_admins(database_url: str) -> None:
    await at_revision(database_url, "0012")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO api_keys (key_id, tenant, secret_sha256, description,"
                    " create_time_us) VALUES ('0123456789abcdef', 'acme', :hash, 'old', 1)"
                ),
                {"hash": hashlib.sha256(b"old-secret").digest()},
            )
    finally:
        await engine.dispose()
    engine = await open_database(database_url)  # migrates to 0013 and beyond
    try:
        keys = ApiKeyRepository(engine)
        caller = await keys.authenticate("zg_0123456789abcdef_old-secret")
        assert caller == Caller("acme", "0123456789abcdef", Role.ADMIN, ())
        [info] = await keys.list("acme")
        assert (info.role, info.scope, info.description) == (Role.ADMIN, (), "old")
    finally:
        await engine.dispose()


async def test_refused_calls_change_nothing(running: RunningGateway, admin: Metadata) -> None:
    await create_instances(running, admin, "kept", "other")
    instances = InstanceServiceStub(running.channel)
    viewer = auth((await make_key(running, admin, kpb.KEY_ROLE_VIEWER)).secret)
    sender = auth((await make_key(running, admin, kpb.KEY_ROLE_SENDER, ["kept"])).secret)
    await expect_error(
        instances.DeleteInstance(ipb.DeleteInstanceRequest(instance_id="kept"), metadata=viewer),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        instances.PauseSending(ipb.PauseSendingRequest(instance_id="kept"), metadata=sender),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    send = MessageServiceStub(running.channel).SendMessage
    request = mpb.SendMessageRequest(
        instance_id="other", phone="+15550001111", text=mpb.Text(body="hi")
    )
    await expect_error(send(request, metadata=sender), grpc.StatusCode.NOT_FOUND)
    await expect_error(
        instances.CreateInstance(ipb.CreateInstanceRequest(instance_id="kept2"), metadata=sender),
        grpc.StatusCode.PERMISSION_DENIED,
    )

    listed = await instances.ListInstances(ipb.ListInstancesRequest(), metadata=admin)
    assert {(i.id, i.sending_paused_reason) for i in listed.instances} == {
        ("kept", ""),
        ("other", ""),
    }
    messages = MessageServiceStub(running.channel)
    sent = await messages.ListMessages(mpb.ListMessagesRequest(instance_id="other"), metadata=admin)
    assert list(sent.messages) == []
    # What the sender may do, it does: send from its own instance.
    request.instance_id = "kept"
    assert (await send(request, metadata=sender)).message.instance_id == "kept"
