"""The HTTP port: every public RPC over Connect (JSON and binary protobuf), gRPC-Web and gRPC,
on a real gateway on loopback, called with httpx over HTTP/1.1 and HTTP/2 (h2c)."""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from connectrpc.code import Code
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2

import zapgate.v1
from tests.conftest import RunningGateway, started_gateway
from tests.connect_http import (
    END_STREAM,
    GRPC_WEB_TRAILERS,
    ConnectFailure,
    bearer,
    envelope,
    json_envelope,
    parse_envelopes,
    stream_end,
    stream_envelopes,
    unary_json,
)
from tests.sim_client import SimClient
from tests.test_auth import ROLE_TO_PROTO, auth, expected_outcome, valid_request
from zapgate.gateway.http.grpc_bridge import CODES
from zapgate.gateway.rpc.roles import Role
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import key_pb2 as kpb
from zapgate.v1.instance_pb2_grpc import InstanceServiceStub
from zapgate.v1.key_pb2_grpc import KeyServiceStub

ALLOWED_ORIGIN = "https://app.example"
# A Connect error that means the handler ran and judged the request; never a crash or a
# method the port does not serve.
JUDGED = {"invalid_argument", "not_found", "failed_precondition", "out_of_range"}


def public_services() -> list[ServiceDescriptor]:
    """Every service of every .proto shipped in zapgate.v1, from the descriptor pool: a new
    file, service or method is picked up without touching this test."""
    services = []
    for proto in sorted(Path(zapgate.v1.__file__).parent.glob("*.proto")):
        importlib.import_module(f"zapgate.v1.{proto.stem}_pb2")
        described = descriptor_pool.Default().FindFileByName(f"zapgate/v1/{proto.name}")
        services.extend(described.services_by_name.values())
    return services


ALL_METHODS = [method for service in public_services() for method in service.methods]


def method_id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@pytest.fixture(scope="module")
async def web(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGateway]:
    async with started_gateway(
        tmp_path_factory.mktemp("web"),
        http_listen="127.0.0.1:0",
        http_allowed_origins=(ALLOWED_ORIGIN,),
        stream_auth_recheck_seconds=0.2,
    ) as running:
        yield running


async def pause(sim: SimClient, instance_id: str) -> None:
    """Pauses sending: one SENDING_PAUSED event."""
    request = pb.PauseSendingRequest(instance_id=instance_id)
    await sim.instances.PauseSending(request, metadata=sim.metadata)


def base_url(web: RunningGateway) -> str:
    assert web.gateway.http_server is not None
    return f"http://127.0.0.1:{web.gateway.http_server.port}"


@pytest.fixture
async def http1(web: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url(web), timeout=30) as client:
        yield client


@pytest.fixture
async def http2(web: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP/2 over cleartext with prior knowledge (what gRPC and Connect clients use)."""
    async with httpx.AsyncClient(
        base_url=base_url(web), http1=False, http2=True, timeout=30
    ) as client:
        yield client


def invalid_instance_request(method: MethodDescriptor) -> dict[str, Any]:
    """An authenticated request the handler must refuse: a malformed instance id wherever
    the method names an instance, nothing else set."""
    fields = method.input_type.fields_by_name
    if "instance_id" in fields:
        return {"instanceId": "Not Valid!"}
    if "instance_ids" in fields:
        return {"instanceIds": ["Not Valid!"]}
    if "instance" in fields:
        return {"instance": {"id": "Not Valid!"}, "updateMask": "displayName"}
    return {}


async def call_json(
    client: httpx.AsyncClient, method: MethodDescriptor, body: dict[str, Any], key: str | None
) -> tuple[list[dict[str, Any]], ConnectFailure | None]:
    """Any unary or server-streaming RPC over Connect JSON: its messages and its error."""
    if not method.server_streaming:
        status, answer = await unary_json(client, path_of(method), body, key)
        if status == 200:
            return [answer], None
        return [], ConnectFailure.from_json(answer)
    headers = {"content-type": "application/connect+json", **(bearer(key) if key else {})}
    response = await client.post(path_of(method), content=json_envelope(body), headers=headers)
    assert response.status_code == 200, response.text
    envelopes = parse_envelopes(response.content)
    flags, end = envelopes[-1]
    assert flags == END_STREAM
    return [json.loads(p) for f, p in envelopes[:-1]], stream_end(end)


@pytest.mark.parametrize(
    "method", ALL_METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}"
)
async def test_every_rpc_answers_over_connect_json(
    web: RunningGateway, http1: httpx.AsyncClient, method: MethodDescriptor, tenant: str
) -> None:
    key = await web.new_key(tenant)
    body = invalid_instance_request(method)
    _, failure = await call_json(http1, method, body, key)
    if body:  # names an instance: refused with the field named, as over gRPC
        assert failure is not None
        assert failure.code == "invalid_argument", failure
        assert failure.reason == "INVALID_ARGUMENT"
        assert any(field.startswith("instance") for field, _ in failure.violations), failure
    elif failure is not None:  # e.g. GetWebhook without an id
        assert failure.code in JUDGED, failure
        assert failure.domain == "zapgate.v1"


def test_every_grpc_code_has_its_connect_code() -> None:
    assert set(CODES) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert CODES[grpc.StatusCode.CANCELLED] is Code.CANCELED
    assert all(
        code.value == status.name.lower()
        for status, code in CODES.items()
        if code is not Code.CANCELED
    )


def test_the_walk_covers_every_service() -> None:
    """The reflection walk finds the seven public services (a broken walk would pass the
    test above vacuously)."""
    names = {m.containing_service.name for m in ALL_METHODS}
    assert names >= {
        "InstanceService",
        "MessageService",
        "EventService",
        "ContactService",
        "GroupService",
        "WebhookService",
        "SimulatorService",
    }
    assert {"Connect", "Subscribe", "DownloadMedia"} <= {
        m.name for m in ALL_METHODS if m.server_streaming
    }


@pytest.mark.parametrize(
    "method", ALL_METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}"
)
@pytest.mark.parametrize("key", [None, "zg_0000000000000000_nope"], ids=["no-key", "unknown-key"])
async def test_every_rpc_needs_a_key(
    http2: httpx.AsyncClient, method: MethodDescriptor, key: str | None
) -> None:
    _, failure = await call_json(http2, method, {}, key)
    assert failure is not None
    assert failure.code == "unauthenticated"
    assert failure.reason == "UNAUTHENTICATED"


async def test_errors_carry_google_rpc_details(
    web: RunningGateway, http1: httpx.AsyncClient, tenant: str
) -> None:
    key = await web.new_key(tenant)
    status, answer = await unary_json(
        http1,
        "/zapgate.v1.InstanceService/CreateInstance",
        {"instanceId": "shop 1", "phone": "12345"},
        key,
    )
    assert status == 400  # Connect's HTTP status for invalid_argument
    failure = ConnectFailure.from_json(answer)
    assert (failure.code, failure.reason, failure.domain) == (
        "invalid_argument",
        "INVALID_ARGUMENT",
        "zapgate.v1",
    )
    assert {field for field, _ in failure.violations} == {"instance_id", "phone"}

    status, answer = await unary_json(
        http1, "/zapgate.v1.InstanceService/GetInstance", {"instanceId": "nowhere"}, key
    )
    failure = ConnectFailure.from_json(answer)
    assert (status, failure.code, failure.reason) == (404, "not_found", "INSTANCE_NOT_FOUND")
    assert failure.metadata == {"instance_id": "nowhere"}


async def test_another_tenants_instance_is_not_found(
    web: RunningGateway, http2: httpx.AsyncClient, tenant: str
) -> None:
    key_a, key_b = await web.new_key(tenant), await web.new_key(f"{tenant}-b")
    status, _ = await unary_json(
        http2, "/zapgate.v1.InstanceService/CreateInstance", {"instanceId": "private"}, key_a
    )
    assert status == 200
    calls = [
        ("InstanceService/GetInstance", {}),
        ("InstanceService/DeleteInstance", {}),
        ("InstanceService/Connect", {}),
        ("InstanceService/GetInstanceStats", {}),
        ("MessageService/SendMessage", {"phone": "+15550001111", "text": {"body": "hi"}}),
        ("ContactService/ListContacts", {}),
        ("GroupService/ListGroups", {}),
        ("SimulatorService/ScanQr", {"code": "x", "phone": "+15550001111"}),
    ]
    by_path = {path_of(m): m for m in ALL_METHODS}
    for path, fields in calls:
        method = by_path[f"/zapgate.v1.{path}"]
        _, failure = await call_json(http2, method, {"instanceId": "private", **fields}, key_b)
        assert failure is not None, path
        assert (failure.code, failure.reason) == ("not_found", "INSTANCE_NOT_FOUND"), path
    # Still there for its owner.
    status, answer = await unary_json(
        http2, "/zapgate.v1.InstanceService/GetInstance", {"instanceId": "private"}, key_a
    )
    assert (status, answer["instance"]["id"]) == (200, "private")


async def test_connect_streams_the_qr_and_the_pairing_over_http2(
    web: RunningGateway, http2: httpx.AsyncClient, tenant: str
) -> None:
    """Create, Connect (a server stream, Connect's streaming JSON), scan the QR it shows
    through SimulatorService.ScanQr, and see CONNECTED and the final result: all over HTTP."""
    key = await web.new_key(tenant)
    created = await unary_json(
        http2, "/zapgate.v1.InstanceService/CreateInstance", {"instanceId": "shop"}, key
    )
    assert created[0] == 200
    updates: list[dict[str, Any]] = []
    end: ConnectFailure | str | None = "open"
    async with http2.stream(
        "POST",
        "/zapgate.v1.InstanceService/Connect",
        content=json_envelope({"instanceId": "shop"}),
        headers={"content-type": "application/connect+json", **bearer(key)},
    ) as response:
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"
        assert response.headers["content-type"] == "application/connect+json"
        async for flags, payload in stream_envelopes(response):
            if flags == END_STREAM:
                end = stream_end(payload)
                break
            update = json.loads(payload)
            updates.append(update)
            if "qrCode" in update and not any("scanned" in u for u in updates):
                updates.append({"scanned": True})
                status, _ = await unary_json(
                    http2,
                    "/zapgate.v1.SimulatorService/ScanQr",
                    {
                        "instanceId": "shop",
                        "code": update["qrCode"]["code"],
                        "phone": "+15550009999",
                    },
                    key,
                )
                assert status == 200
    assert end is None  # the stream ended without an error
    states = [u["stateChange"]["state"] for u in updates if "stateChange" in u]
    assert states[-1] == "INSTANCE_STATE_CONNECTED"
    assert "INSTANCE_STATE_PAIRING" in states
    assert updates[-1]["result"]["outcome"] == "CONNECT_OUTCOME_CONNECTED"
    qr = next(u["qrCode"] for u in updates if "qrCode" in u)
    assert qr["png"]  # the PNG travels as base64 in JSON
    status, answer = await unary_json(
        http2, "/zapgate.v1.InstanceService/GetInstance", {"instanceId": "shop"}, key
    )
    assert answer["instance"]["state"] == "INSTANCE_STATE_CONNECTED"


async def test_subscribe_streams_events_as_binary_protobuf(
    web: RunningGateway, http1: httpx.AsyncClient, tenant: str
) -> None:
    """EventService.Subscribe with Connect's binary protobuf, over HTTP/1.1: the tenant's
    events from the start, live ones included, and the start cursor as a header."""
    key = await web.new_key(tenant)
    sim = SimClient(web.channel, key)
    await sim.create("events-a")
    await sim.create("events-b")
    await pause(sim, "events-a")
    request = epb.SubscribeRequest(from_cursor=0)
    seen: list[epb.Event] = []
    async with http1.stream(
        "POST",
        "/zapgate.v1.EventService/Subscribe",
        content=envelope(request.SerializeToString()),
        headers={"content-type": "application/connect+proto", **bearer(key)},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/connect+proto"
        assert response.headers["zapgate-start-cursor"] == "0"
        async for flags, payload in stream_envelopes(response):
            assert flags == 0, payload
            event = epb.SubscribeResponse.FromString(payload).event
            seen.append(event)
            if len(seen) == 1:
                await pause(sim, "events-b")  # a live event, after the stream is open
            if event.instance_id == "events-b":
                break
    assert [e.instance_id for e in seen] == ["events-a", "events-b"]
    assert all(e.WhichOneof("payload") == "sending_paused" for e in seen)
    assert seen[0].cursor < seen[1].cursor


async def test_a_revoked_key_ends_an_open_stream_unauthenticated(
    web: RunningGateway, http2: httpx.AsyncClient, tenant: str
) -> None:
    key = await web.new_key(tenant)
    sim = SimClient(web.channel, key)
    await sim.create("watched")
    await pause(sim, "watched")
    async with http2.stream(
        "POST",
        "/zapgate.v1.EventService/Subscribe",
        content=json_envelope({}),
        headers={"content-type": "application/connect+json", **bearer(key)},
    ) as response:
        envelopes = stream_envelopes(response)
        flags, _ = await anext(envelopes)  # the pause: the stream is open
        assert flags == 0
        engine = await open_database(web.database_url)
        try:
            assert await ApiKeyRepository(engine).revoke(key.split("_")[1])
        finally:
            await engine.dispose()
        flags, payload = await anext(envelopes)
    assert flags == END_STREAM
    failure = stream_end(payload)
    assert failure is not None
    assert (failure.code, failure.reason) == ("unauthenticated", "UNAUTHENTICATED")


async def test_unary_binary_protobuf(
    web: RunningGateway, http2: httpx.AsyncClient, tenant: str
) -> None:
    key = await web.new_key(tenant)
    request = pb.CreateInstanceRequest(instance_id="bin", display_name="Binary")
    response = await http2.post(
        "/zapgate.v1.InstanceService/CreateInstance",
        content=request.SerializeToString(),
        headers={"content-type": "application/proto", **bearer(key)},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/proto"
    created = pb.CreateInstanceResponse.FromString(response.content)
    assert (created.instance.id, created.instance.display_name) == ("bin", "Binary")
    # Errors are JSON whatever the message encoding (Connect's unary error format).
    response = await http2.post(
        "/zapgate.v1.InstanceService/GetInstance",
        content=pb.GetInstanceRequest(instance_id="none").SerializeToString(),
        headers={"content-type": "application/proto", **bearer(key)},
    )
    assert response.status_code == 404
    assert ConnectFailure.from_json(response.json()).reason == "INSTANCE_NOT_FOUND"


async def test_grpc_web(web: RunningGateway, http1: httpx.AsyncClient, tenant: str) -> None:
    """gRPC-Web (what browsers' gRPC libraries speak): status in a trailers envelope, the
    error details in grpc-status-details-bin, as over gRPC."""
    key = await web.new_key(tenant)
    await SimClient(web.channel, key).create("web-1")
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **bearer(key)}
    response = await http1.post(
        "/zapgate.v1.InstanceService/GetInstance",
        content=envelope(pb.GetInstanceRequest(instance_id="web-1").SerializeToString()),
        headers=headers,
    )
    assert response.status_code == 200
    (data_flags, data), (trailer_flags, ok_trailers) = parse_envelopes(response.content)
    assert (data_flags, trailer_flags) == (0, GRPC_WEB_TRAILERS)
    assert pb.GetInstanceResponse.FromString(data).instance.id == "web-1"
    assert b"grpc-status: 0" in ok_trailers

    response = await http1.post(
        "/zapgate.v1.InstanceService/GetInstance",
        content=envelope(pb.GetInstanceRequest(instance_id="web-2").SerializeToString()),
        headers=headers,
    )
    # The status, message and google.rpc details come in the trailers envelope.
    ((flags, raw_trailers),) = parse_envelopes(response.content)
    assert flags == GRPC_WEB_TRAILERS
    trailers = dict(line.split(": ", 1) for line in raw_trailers.decode().split("\r\n") if line)
    assert trailers["grpc-status"] == str(grpc.StatusCode.NOT_FOUND.value[0])
    raw = trailers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "INSTANCE_NOT_FOUND"


async def test_grpc_clients_can_use_the_http_port_too(web: RunningGateway, tenant: str) -> None:
    """The port also speaks gRPC (HTTP/2 with trailers): a plain gRPC channel works on it."""
    key = await web.new_key(tenant)
    assert web.gateway.http_server is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{web.gateway.http_server.port}") as channel:
        sim = SimClient(channel, key)
        created = await sim.create("over-http-port")
        assert created.id == "over-http-port"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sim.get("absent")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The same instance over the gRPC port: one service, one store.
    assert (await SimClient(web.channel, key).get("over-http-port")).id == "over-http-port"


async def test_cors_lets_only_allowed_origins_in(http1: httpx.AsyncClient) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    path = "/zapgate.v1.InstanceService/ListInstances"
    allowed = await http1.options(path, headers={"origin": ALLOWED_ORIGIN, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "connect-protocol-version" in allowed.headers["access-control-allow-headers"].lower()

    other = await http1.options(path, headers={"origin": "https://evil.example", **preflight})
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers

    # The call itself, from the allowed origin: the page may read the answer.
    answer = await http1.post(
        path,
        content="{}",
        headers={"origin": ALLOWED_ORIGIN, "content-type": "application/json"},
    )
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    # From another origin: no CORS header, so a browser hides the answer.
    answer = await http1.post(
        path,
        content="{}",
        headers={"origin": "https://evil.example", "content-type": "application/json"},
    )
    assert "access-control-allow-origin" not in answer.headers


async def test_unknown_paths_are_404_and_the_root_is_the_console(
    http1: httpx.AsyncClient,
) -> None:
    # This package ships the console's bundle (gateway/console/dist): paths that name no
    # service go to its files, which answer GET and HEAD only.
    unknown_rpc = await http1.post("/zapgate.v1.NoSuchService/Call", content="{}")
    assert unknown_rpc.status_code == 405
    assert unknown_rpc.headers["allow"] == "GET, HEAD"
    assert (await http1.get("/no-such-file.js")).status_code == 404
    root = await http1.get("/")
    assert root.status_code == 200
    assert '<div id="app">' in root.text


# ---- roles and scopes over HTTP: the same guard as gRPC (tests/test_auth.py) --------------


@pytest.fixture(scope="module")
async def scoped_keys(web: RunningGateway) -> tuple[str, dict[tuple[Role, str], str]]:
    """One instance of tenant `http-matrix` and a key for every role x scope (made through
    KeyService, as in the gRPC matrix)."""
    admin = auth(await web.new_key("http-matrix"))
    target = "target"
    await InstanceServiceStub(web.channel).CreateInstance(
        pb.CreateInstanceRequest(instance_id=target), metadata=admin
    )
    keys = {}
    for role in Role:
        for scope, ids in (("unscoped", []), ("in-scope", [target]), ("out-of-scope", ["x"])):
            created = await KeyServiceStub(web.channel).CreateKey(
                kpb.CreateKeyRequest(role=ROLE_TO_PROTO[role], instance_ids=ids), metadata=admin
            )
            keys[role, scope] = created.secret
    return target, keys


def refused_to_some_key(method: MethodDescriptor) -> bool:
    """All but the tenant-wide listings a viewer may call (they narrow to the key's scope)."""
    combos = [(role, scope) for role in Role for scope in ("unscoped", "in-scope", "out-of-scope")]
    return any(expected_outcome(method, role, scope) != "allowed" for role, scope in combos)


@pytest.mark.parametrize(
    "method",
    [m for m in ALL_METHODS if refused_to_some_key(m)],
    ids=lambda m: f"{m.containing_service.name}.{m.name}",
)
async def test_roles_and_scopes_refuse_over_http_as_over_grpc(
    http1: httpx.AsyncClient,
    scoped_keys: tuple[str, dict[tuple[Role, str], str]],
    method: MethodDescriptor,
) -> None:
    """Every refusal of the gRPC matrix, over Connect JSON: a role too low (or a scoped key
    on a tenant-wide call) is permission_denied, an instance outside the scope not_found."""
    target, keys = scoped_keys
    body = json_format.MessageToDict(valid_request(method, target))
    for (role, scope), key in keys.items():
        outcome = expected_outcome(method, role, scope)
        if outcome == "allowed":
            continue  # reaching the service is what test_every_rpc_answers_over_connect_json shows
        _, failure = await call_json(http1, method, body, key)
        assert failure is not None, (role.label, scope)
        if outcome == "denied":
            assert (failure.code, failure.reason) == ("permission_denied", "PERMISSION_DENIED")
            assert failure.metadata["role"] == role.label
        else:
            assert (failure.code, failure.reason) == ("not_found", "INSTANCE_NOT_FOUND")
