"""The per-call scope every public method is wrapped in at registration (handlers.py,
call_guard.py): authentication, the tenant and instance in context, errors as statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.rpc import expect_error
from zapgate.gateway.ops.logs import current_instance
from zapgate.gateway.rpc.call_guard import CallGuard
from zapgate.gateway.rpc.errors import MessageNotFound
from zapgate.gateway.rpc.handlers import registrar
from zapgate.gateway.rpc.roles import Caller, Role
from zapgate.gateway.rpc.tenancy import current_tenant
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import message_pb2_grpc

KEY = (("authorization", "Bearer good-key"),)


class Probe(message_pb2_grpc.MessageServiceServicer):
    """GetMessage answers with what the scope put in context, or fails as asked."""

    ran: ClassVar[list[str]] = []  # instance ids of the calls that reached the method

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: Any
    ) -> pb.GetMessageResponse:
        Probe.ran.append(request.instance_id)
        if request.message_id == "missing":
            raise MessageNotFound("missing")
        if request.message_id == "crash":
            raise RuntimeError("a bug")
        tenant, instance_id = current_instance() or ("", "")
        assert tenant == current_tenant()
        return pb.GetMessageResponse(
            message=pb.Message(id=current_tenant(), instance_id=instance_id)
        )


async def authenticate(key: str) -> Caller | None:
    if key == "explode":
        raise ConnectionError("state store unreachable")
    return KEYS.get(key)


KEYS = {
    "good-key": Caller("acme", "k1", Role.ADMIN),
    "shop-viewer": Caller("acme", "k2", Role.VIEWER, ("shop",)),
    "desk-viewer": Caller("acme", "k3", Role.VIEWER, ("desk",)),
}


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    served = registrar(server, [CallGuard(authenticate).wrap])
    message_pb2_grpc.add_MessageServiceServicer_to_server(Probe(), served)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), served)  # type: ignore[attr-defined]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> message_pb2_grpc.MessageServiceStub:
    return message_pb2_grpc.MessageServiceStub(channel)


def get(message_id: str) -> pb.GetMessageRequest:
    return pb.GetMessageRequest(instance_id="shop", message_id=message_id)


async def test_the_call_runs_with_its_tenant_and_instance_in_context(stub: Any) -> None:
    reply = await stub.GetMessage(get("m1"), metadata=KEY)
    assert (reply.message.id, reply.message.instance_id) == ("acme", "shop")


async def test_without_a_known_key_the_method_never_runs(stub: Any) -> None:
    await expect_error(stub.GetMessage(get("m1")), grpc.StatusCode.UNAUTHENTICATED)
    bad = (("authorization", "Bearer nope"),)
    await expect_error(stub.GetMessage(get("m1"), metadata=bad), grpc.StatusCode.UNAUTHENTICATED)


async def test_zapgate_errors_keep_their_code_and_details(stub: Any) -> None:
    info, _ = await expect_error(
        stub.GetMessage(get("missing"), metadata=KEY), grpc.StatusCode.NOT_FOUND
    )
    assert info.reason == "MESSAGE_NOT_FOUND"


async def test_a_bug_is_internal_without_its_text(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetMessage(get("crash"), metadata=KEY)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "a bug" not in (caught.value.details() or "")


async def test_a_failing_key_check_is_internal(stub: Any) -> None:
    broken = (("authorization", "Bearer explode"),)
    await expect_error(stub.GetMessage(get("m1"), metadata=broken), grpc.StatusCode.INTERNAL)


async def test_health_stays_public_through_the_same_registrar(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_instance_outside_the_scope_is_not_found_before_the_method_runs(
    stub: Any,
) -> None:
    Probe.ran.clear()
    inside = (("authorization", "Bearer shop-viewer"),)
    reply = await stub.GetMessage(get("m1"), metadata=inside)
    assert reply.message.instance_id == "shop"
    outside = (("authorization", "Bearer desk-viewer"),)
    info, _ = await expect_error(
        stub.GetMessage(get("m1"), metadata=outside), grpc.StatusCode.NOT_FOUND
    )
    assert (info.reason, info.metadata["instance_id"]) == ("INSTANCE_NOT_FOUND", "shop")
    shouting = pb.GetMessageRequest(instance_id="SHOP", message_id="m1")  # ids are lowered first
    assert (await stub.GetMessage(shouting, metadata=inside)).message.instance_id == "shop"
    assert Probe.ran == ["shop", "shop"]
