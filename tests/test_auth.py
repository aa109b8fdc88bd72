"""API keys and tenant isolation on every RPC of the public API."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import RunningGateway, auth
from tests.rpc import expect_error
from zapgate.gateway.rpc.access import REQUIRED_ROLES, MethodAccess
from zapgate.gateway.rpc.roles import Role
from zapgate.gateway.services.events import START_CURSOR_HEADER
from zapgate.gateway.services.keys import ROLES_TO_PROTO as ROLE_TO_PROTO
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.v1 import chat_pb2 as chpb
from zapgate.v1 import contact_pb2 as cpb
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import group_pb2 as gpb
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import key_pb2 as kpb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb
from zapgate.v1 import webhook_pb2 as wpb
from zapgate.v1.instance_pb2_grpc import InstanceServiceStub
from zapgate.v1.key_pb2_grpc import KeyServiceStub

PUBLIC_SERVICES = [
    pb.DESCRIPTOR.services_by_name["InstanceService"],
    spb.DESCRIPTOR.services_by_name["SimulatorService"],
    mpb.DESCRIPTOR.services_by_name["MessageService"],
    epb.DESCRIPTOR.services_by_name["EventService"],
    cpb.DESCRIPTOR.services_by_name["ContactService"],
    wpb.DESCRIPTOR.services_by_name["WebhookService"],
    gpb.DESCRIPTOR.services_by_name["GroupService"],
    kpb.DESCRIPTOR.services_by_name["KeyService"],
    chpb.DESCRIPTOR.services_by_name["ChatService"],
]
GROUP = "120363000000000001@g.us"
ALL_METHODS = [method for service in PUBLIC_SERVICES for method in service.methods]
Metadata = tuple[tuple[str, str], ...]
A_MESSAGE_IDS: list[str] = []  # the message tenant A sent in `owned_by_a`


async def _drain(stream: AsyncIterator[Message]) -> list[Message]:
    return [item async for item in stream]


def call(
    running: RunningGateway, method: MethodDescriptor, request: Message, metadata: Metadata
) -> Awaitable[object]:
    """Calls any unary or server-streaming RPC by its descriptor."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    codecs = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": message_factory.GetMessageClass(method.output_type).FromString,
    }
    if method.server_streaming:
        return _drain(running.channel.unary_stream(path, **codecs)(request, metadata=metadata))
    return running.channel.unary_unary(path, **codecs)(request, metadata=metadata)


def request_for(method: MethodDescriptor, instance_id: str = "") -> Message:
    request = message_factory.GetMessageClass(method.input_type)()
    if instance_id:
        if "instance_id" in method.input_type.fields_by_name:
            request.instance_id = instance_id  # type: ignore[attr-defined]
        elif method.name == "UpdateInstance":
            request.instance.id = instance_id  # type: ignore[attr-defined]
            request.update_mask.paths.append("display_name")  # type: ignore[attr-defined]
    return request


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
    running: RunningGateway, method: MethodDescriptor, metadata: Metadata
) -> None:
    info, _ = await expect_error(
        call(running, method, request_for(method), metadata), grpc.StatusCode.UNAUTHENTICATED
    )
    assert info.reason == "UNAUTHENTICATED"


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
async def test_every_rpc_rejects_a_revoked_key(
    running: RunningGateway, method: MethodDescriptor, tenant: str
) -> None:
    key = await running.new_key(tenant)
    engine = await open_database(running.database_url)
    try:
        assert await ApiKeyRepository(engine).revoke(key.split("_")[1])
    finally:
        await engine.dispose()
    await expect_error(
        call(running, method, request_for(method), auth(key)), grpc.StatusCode.UNAUTHENTICATED
    )


@pytest.fixture
async def owned_by_a(running: RunningGateway, tenant: str) -> str:
    """An instance of tenant A (this test's tenant); returns its id."""
    stub_call = running.channel.unary_unary(
        "/zapgate.v1.InstanceService/CreateInstance",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.CreateInstanceResponse.FromString,
    )
    key_a = auth(await running.new_key(tenant))
    await stub_call(
        pb.CreateInstanceRequest(instance_id="secret", display_name="A's"), metadata=key_a
    )
    send = running.channel.unary_unary(
        "/zapgate.v1.MessageService/SendMessage",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=mpb.SendMessageResponse.FromString,
    )
    sent = await send(
        mpb.SendMessageRequest(
            instance_id="secret", phone="+15550002222", text=mpb.Text(body="A's message")
        ),
        metadata=key_a,
    )
    A_MESSAGE_IDS.append(sent.message.id)
    return "secret"


@pytest.mark.parametrize(
    "method",
    # Subscribe's tenant isolation is tested in test_events.py (its stream never ends),
    # webhooks' (which name no instance) in test_webhooks.py, keys' in test_keys.py.
    [
        m
        for m in ALL_METHODS
        if m.name not in {"CreateInstance", "ListInstances", "Subscribe"}
        and m.containing_service.name not in ("WebhookService", "KeyService")
    ],
    ids=lambda m: m.name,
)
async def test_another_tenants_instance_is_not_found(
    running: RunningGateway, method: MethodDescriptor, owned_by_a: str
) -> None:
    key_b = auth(await running.new_key("tenant-b"))
    request = valid_request(method, owned_by_a)
    info, _ = await expect_error(call(running, method, request, key_b), grpc.StatusCode.NOT_FOUND)
    assert info.reason in ("INSTANCE_NOT_FOUND", "MESSAGE_NOT_FOUND")


def valid_request(method: MethodDescriptor, instance_id: str) -> Message:
    """A request of `method` naming `instance_id` that passes validation."""
    request = request_for(method, instance_id)
    if method.name == "ScanQr":
        request.code, request.phone = "x", "+15550001111"  # type: ignore[attr-defined]
    if method.name == "EnterPairCode":
        request.code = "ABCD-EFGH"  # type: ignore[attr-defined]
    if method.name == "TemporaryBan":
        request.expires_in_seconds = 60  # type: ignore[attr-defined]
    a_message = A_MESSAGE_IDS[-1] if A_MESSAGE_IDS else "msg-1"
    if method.name in ("GetMessage", "CancelMessage", "DownloadMedia", "React", "RevokeMessage"):
        request.message_id = a_message  # type: ignore[attr-defined]
    if method.name == "GetChatMessage":
        request.message_id = a_message  # type: ignore[attr-defined]
    if method.name == "EditMessage":
        request.message_id, request.text = a_message, "edited"  # type: ignore[attr-defined]
    if method.name == "MarkRead":
        request.message_ids.append("3EB0X")  # type: ignore[attr-defined]
    if method.name == "SendChatPresence":
        request.phone = "+15550001111"  # type: ignore[attr-defined]
        request.presence = mpb.CHAT_PRESENCE_COMPOSING  # type: ignore[attr-defined]
    if method.name == "InjectIncomingMessage":
        request.from_phone, request.text = "+15550001111", "hi"  # type: ignore[attr-defined]
    if method.name == "SetPresence":
        request.presence = mpb.PRESENCE_AVAILABLE  # type: ignore[attr-defined]
    if method.name == "SubscribePresence":
        request.phone = "+15550001111"  # type: ignore[attr-defined]
    if method.name == "InjectPresence":
        request.from_phone = "+15550001111"  # type: ignore[attr-defined]
        request.chat_presence = mpb.CHAT_PRESENCE_COMPOSING  # type: ignore[attr-defined]
    if method.name == "InjectCall":
        request.from_phone = "+15550001111"  # type: ignore[attr-defined]
    if method.name == "ReadOnPhone":
        request.chat_jid = "15550001111@s.whatsapp.net"  # type: ignore[attr-defined]
        request.message_ids.append("3EB0X")  # type: ignore[attr-defined]
    if method.name == "SendReceipt":
        request.whatsapp_message_ids.append("3EB0X")  # type: ignore[attr-defined]
        request.kind = spb.RECEIPT_KIND_READ  # type: ignore[attr-defined]
    if method.name == "CheckNumbers":
        request.phones.append("+15550001111")  # type: ignore[attr-defined]
    if method.name == "ResolveJids":
        request.jids.append("15550001111@s.whatsapp.net")  # type: ignore[attr-defined]
    if method.name == "SendMessage":
        request.phone, request.text.body = "+15550001111", "hi"  # type: ignore[attr-defined]
    _fill_group_fields(method, request)
    if "chat_jid" in method.input_type.fields_by_name:
        request.chat_jid = "15550001111@s.whatsapp.net"  # type: ignore[attr-defined]
    if method.name == "SearchMessages":
        request.query = "message"  # type: ignore[attr-defined]
    return request


def _fill_group_fields(method: MethodDescriptor, request: Message) -> None:
    """A valid request of a GroupService (or group simulator) RPC, naming A's instance."""
    fields = method.input_type.fields_by_name
    if "group_jid" in fields:
        request.group_jid = GROUP  # type: ignore[attr-defined]
    if "name" in fields:
        request.name = "A group"  # type: ignore[attr-defined]
    if "invite_link" in fields:
        request.invite_link = "https://chat.whatsapp.com/AbCdEfGh1234"  # type: ignore[attr-defined]
    if method.name == "UpdateParticipants":
        request.action = gpb.PARTICIPANT_ACTION_ADD  # type: ignore[attr-defined]
        request.participants.append("+15550001111")  # type: ignore[attr-defined]
    if method.name == "SetGroupSettings":
        request.announce = True  # type: ignore[attr-defined]
    if "jpeg" in fields:
        request.jpeg = b"\xff\xd8\xff\xe0 a picture"  # type: ignore[attr-defined]
    if method.name == "ChangeGroup":
        request.by_phone, request.topic = "+15550001111", "t"  # type: ignore[attr-defined]


async def test_list_and_create_stay_within_the_tenant(
    running: RunningGateway, owned_by_a: str, tenant: str
) -> None:
    key_b = auth(await running.new_key(f"{tenant}-b"))
    list_method = pb.DESCRIPTOR.services_by_name["InstanceService"].methods_by_name
    listed = await call(running, list_method["ListInstances"], pb.ListInstancesRequest(), key_b)
    assert list(listed.instances) == []  # type: ignore[attr-defined]
    # Ids are unique per tenant: B may use the same id, and gets its own instance.
    own = await call(
        running,
        list_method["CreateInstance"],
        pb.CreateInstanceRequest(instance_id=owned_by_a, display_name="B's"),
        key_b,
    )
    assert own.created  # type: ignore[attr-defined]
    key_a = auth(await running.new_key(tenant))
    seen_by_a = await call(
        running, list_method["GetInstance"], pb.GetInstanceRequest(instance_id=owned_by_a), key_a
    )
    assert seen_by_a.instance.display_name == "A's"  # type: ignore[attr-defined]


def test_the_matrix_covers_every_public_rpc() -> None:
    names = {m.name for m in ALL_METHODS}
    assert {"Connect", "Logout", "Reconnect", "ScanQr", "DeleteInstance", "UpdateInstance"} <= names
    assert {"SendMessage", "GetInstanceStats", "PauseSending", "ListReceived"} <= names
    assert {"InjectIncomingMessage", "DownloadMedia", "SyncContacts", "CheckNumbers"} <= names
    assert {"CreateGroup", "UpdateParticipants", "JoinGroup", "ChangeGroup"} <= names
    assert {"ResolveJids", "SetLidMappings"} <= names
    assert {"React", "EditMessage", "RevokeMessage", "MarkRead", "SendChatPresence"} <= names
    assert {"CreateWebhook", "UpdateWebhook", "TestWebhook"} <= names
    assert {"SetGroupPhoto", "ListJoinRequests"} <= names
    assert {"CreateKey", "ListKeys", "RevokeKey"} <= names
    assert {"SetPresence", "SubscribePresence", "InjectPresence", "InjectCall"} <= names
    assert "ReadOnPhone" in names
    assert {"ListChats", "ListChatMessages", "SearchMessages", "MarkChatRead"} <= names
    assert {"GetChatSettings", "UpdateChatSettings", "PreloadHistory"} <= names
    # 44, GroupService's 13, ResolveJids, 3 + 4 simulator calls, 3 keys, 2 presences and
    # ChatService's 9
    assert len(names) == 79


# ---- roles and instance scopes -------------------------------------------------------------
#
# Every public RPC x every role x three scopes, on a real gateway: a key scoped elsewhere
# gets NOT_FOUND for an instance outside its scope (as for one that does not exist), a role
# too low or a tenant-wide call from a scoped key gets PERMISSION_DENIED, and anything else
# reaches the service (which may still refuse the request for its own reasons).

MATRIX_TENANT = "matrix"
SCOPES = ["unscoped", "in-scope", "out-of-scope"]
_targets = itertools.count()


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def names_an_instance(method: MethodDescriptor) -> bool:
    return "instance_id" in method.input_type.fields_by_name or method.name == "UpdateInstance"


def expected_outcome(method: MethodDescriptor, role: Role, scope: str) -> str:
    access = MethodAccess(path_of(method))
    assert access.required is not None
    if role < access.required or (scope != "unscoped" and access.tenant_wide):
        return "denied"
    if scope == "out-of-scope" and names_an_instance(method):
        return "not_found"
    return "allowed"


@pytest.fixture(scope="module")
async def matrix_admin(running: RunningGateway) -> Metadata:
    return auth(await running.new_key(MATRIX_TENANT))


async def create_key(
    running: RunningGateway, admin: Metadata, role: Role, scope: list[str]
) -> Metadata:
    """A key made through KeyService (by an unscoped admin)."""
    created = await KeyServiceStub(running.channel).CreateKey(
        kpb.CreateKeyRequest(role=ROLE_TO_PROTO[role], instance_ids=scope), metadata=admin
    )
    return auth(created.secret)


async def passes_the_guard(
    running: RunningGateway, method: MethodDescriptor, request: Message, key: Metadata
) -> None:
    """Calls `method`; whatever it answers, the call guard let it through."""
    error = await error_of(running, method, request, key)
    if error is not None:
        assert error.code() != grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(error) != "PERMISSION_DENIED", error.details()


async def error_of(
    running: RunningGateway, method: MethodDescriptor, request: Message, key: Metadata
) -> grpc.aio.AioRpcError | None:
    """The call's error, or None once it answered (streams that last: their first step)."""
    output = message_factory.GetMessageClass(method.output_type)
    try:
        if method.name not in ("Subscribe", "Connect"):
            await call(running, method, request, key)
            return None
        stream = running.channel.unary_stream(
            path_of(method),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=output.FromString,
        )(request, metadata=key)
        try:
            if method.name == "Subscribe":
                headers = await stream.initial_metadata()
                assert START_CURSOR_HEADER in dict(headers or ())  # the service ran
            else:
                assert (await stream.read()) is not grpc.aio.EOF
        finally:
            stream.cancel()
    except grpc.aio.AioRpcError as error:
        return error
    return None


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return info.reason


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.label)
@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
async def test_every_rpc_by_role_and_scope(
    running: RunningGateway,
    matrix_admin: Metadata,
    method: MethodDescriptor,
    role: Role,
    scope: str,
) -> None:
    target = f"m{next(_targets)}"
    await InstanceServiceStub(running.channel).CreateInstance(
        pb.CreateInstanceRequest(instance_id=target), metadata=matrix_admin
    )
    scope_ids = {"unscoped": [], "in-scope": [target], "out-of-scope": [f"{target}-x"]}[scope]
    key = await create_key(running, matrix_admin, role, scope_ids)
    request = valid_request(method, target)
    outcome = expected_outcome(method, role, scope)
    if outcome == "allowed":
        await passes_the_guard(running, method, request, key)
        return
    code = grpc.StatusCode.PERMISSION_DENIED if outcome == "denied" else grpc.StatusCode.NOT_FOUND
    info, _ = await expect_error(call(running, method, request, key), code)
    if outcome == "denied":
        assert info.reason == "PERMISSION_DENIED"
        assert info.metadata["role"] == role.label
    else:
        assert info.reason == "INSTANCE_NOT_FOUND"
        assert info.metadata["instance_id"] == target


@pytest.mark.parametrize(
    "method",
    [m for m in ALL_METHODS if m.name in ("GetInstance", "SendMessage", "Connect")],
    ids=lambda m: m.name,
)
async def test_an_instance_outside_the_scope_answers_exactly_like_a_missing_one(
    running: RunningGateway, matrix_admin: Metadata, method: MethodDescriptor
) -> None:
    target = f"m{next(_targets)}"
    await InstanceServiceStub(running.channel).CreateInstance(
        pb.CreateInstanceRequest(instance_id=target), metadata=matrix_admin
    )
    scoped = await create_key(running, matrix_admin, Role.ADMIN, [f"{target}-x"])
    with pytest.raises(grpc.aio.AioRpcError) as outside:
        await call(running, method, valid_request(method, target), scoped)
    # The same id, deleted: now it does not exist, and an unscoped key asks for it.
    await InstanceServiceStub(running.channel).DeleteInstance(
        pb.DeleteInstanceRequest(instance_id=target), metadata=matrix_admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await call(running, method, valid_request(method, target), matrix_admin)
    assert outside.value.code() == missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert outside.value.details() == missing.value.details()
    assert outside.value.trailing_metadata() == missing.value.trailing_metadata()


def test_every_public_rpc_has_an_access_rule_and_the_table_no_stale_one() -> None:
    for method in ALL_METHODS:
        assert MethodAccess(path_of(method)).required is not None, method.full_name
    tabled = {f"{service}/{name}" for service, names in REQUIRED_ROLES.items() for name in names}
    assert tabled == {f"{m.containing_service.name}/{m.name}" for m in ALL_METHODS}
    assert MethodAccess("/zapgate.v1.InstanceService/NoSuchRpc").required is None


def test_the_roles_mean_what_the_docs_say() -> None:
    def need(method: MethodDescriptor) -> Role | None:
        return MethodAccess(path_of(method)).required

    by_name = {m.name: m for m in ALL_METHODS}
    # Reads are open to viewers (GetInviteLink hands out a way in, and can reset it).
    for method in ALL_METHODS:
        if method.name.startswith(("Get", "List")) and method.name not in ("GetInviteLink",):
            assert need(method) == Role.VIEWER or method.name == "ListKeys", method.name
    assert need(by_name["Subscribe"]) == need(by_name["DownloadMedia"]) == Role.VIEWER
    for name in ("SendMessage", "React", "EditMessage", "RevokeMessage", "CancelMessage"):
        assert need(by_name[name]) == Role.SENDER
    for name in ("CreateInstance", "DeleteInstance", "Connect", "Logout", "UpdateInstance"):
        assert need(by_name[name]) == Role.OPERATOR
    assert need(by_name["PauseSending"]) == need(by_name["CreateWebhook"]) == Role.OPERATOR
    admin_only = {m.name for m in ALL_METHODS if need(m) == Role.ADMIN}
    assert admin_only == {"CreateKey", "ListKeys", "RevokeKey"}
