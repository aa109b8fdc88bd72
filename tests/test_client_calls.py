"""The Python client (clients/python) against real gRPC servers with scripted answers:
the API key, retries on UNAVAILABLE, the resuming subscription, TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.test_tls import Pki, mtls_gateway, pki  # noqa: F401 (fixtures)
from zapgate.gateway.server import Gateway
from zapgate_client import Client, Retry, Tls
from zapgate_client.v1 import event_pb2, event_pb2_grpc, instance_pb2, instance_pb2_grpc

FAST = Retry(attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)
Context = grpc.aio.ServicerContext[Any, Any]


class Instances(instance_pb2_grpc.InstanceServiceServicer):
    """GetInstance answers with `failures` first (one per call), then the instance."""

    def __init__(self, *failures: grpc.StatusCode) -> None:
        self.failures = list(failures)
        self.keys: list[str] = []

    async def GetInstance(
        self, request: instance_pb2.GetInstanceRequest, context: Context
    ) -> instance_pb2.GetInstanceResponse:
        self.keys.append(dict(context.invocation_metadata() or ()).get("authorization", ""))
        if self.failures:
            await context.abort(self.failures.pop(0), "scripted failure")
        return instance_pb2.GetInstanceResponse(instance=instance_pb2.Instance(id="sales"))


class Events(event_pb2_grpc.EventServiceServicer):
    """Each Subscribe streams the next script's cursors, then ends as the script says."""

    def __init__(self, *scripts: tuple[list[int], grpc.StatusCode | None]) -> None:
        self.scripts = list(scripts)
        self.requests: list[event_pb2.SubscribeRequest] = []

    async def Subscribe(
        self, request: event_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[event_pb2.SubscribeResponse]:
        self.requests.append(request)
        cursors, ending = self.scripts.pop(0) if self.scripts else ([], grpc.StatusCode.UNKNOWN)
        for cursor in cursors:
            yield event_pb2.SubscribeResponse(event=event_pb2.Event(cursor=cursor))
        if ending is not None:
            await context.abort(ending, "scripted end")


async def serve(*servicers: Any) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    adders: dict[type, Callable[[Any, grpc.aio.Server], None]] = {
        Instances: instance_pb2_grpc.add_InstanceServiceServicer_to_server,
        Events: event_pb2_grpc.add_EventServiceServicer_to_server,
    }
    for servicer in servicers:
        adders[type(servicer)](servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def follow(events: AsyncIterator[event_pb2.Event], cursors: list[int]) -> None:
    async for event in events:
        cursors.append(event.cursor)


async def get_instance(client: Client) -> instance_pb2.Instance:
    request = instance_pb2.GetInstanceRequest(instance_id="sales")
    return (await client.instances.GetInstance(request)).instance


async def test_unavailable_is_retried_with_the_api_key_on_every_attempt() -> None:
    instances = Instances(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    server, address = await serve(instances)
    async with Client(address, "zg_key", retry=FAST) as client:
        assert (await get_instance(client)).id == "sales"
    await server.stop(None)
    assert instances.keys == ["Bearer zg_key"] * 3


@pytest.mark.parametrize(
    ("retry", "failures", "calls"),
    [
        (FAST, [grpc.StatusCode.NOT_FOUND], 1),  # only UNAVAILABLE is retried
        (FAST, [grpc.StatusCode.UNAVAILABLE] * 3, 3),  # up to the attempts
        (None, [grpc.StatusCode.UNAVAILABLE], 1),  # retries off
    ],
)
async def test_failures_that_are_not_retried(
    retry: Retry | None, failures: list[grpc.StatusCode], calls: int
) -> None:
    instances = Instances(*failures)
    server, address = await serve(instances)
    async with Client(address, "zg_key", retry=retry) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_instance(client)
    await server.stop(None)
    assert caught.value.code() == failures[-1]
    assert len(instances.keys) == calls


async def test_subscription_resumes_after_its_last_cursor() -> None:
    events = Events(
        ([4, 5], grpc.StatusCode.UNAVAILABLE),  # broken mid-stream
        ([], grpc.StatusCode.UNAVAILABLE),  # still down
        ([6], None),  # the server stopping ends the stream normally
        ([7, 8], grpc.StatusCode.OUT_OF_RANGE),  # raised to the caller
    )
    server, address = await serve(events)
    seen: list[int] = []
    async with Client(address, "zg_key", retry=FAST) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await follow(client.subscribe(3, instance_ids=["sales"]), seen)
    await server.stop(None)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert seen == [4, 5, 6, 7, 8]
    assert [r.from_cursor for r in events.requests] == [3, 5, 5, 6]
    assert all(list(r.instance_ids) == ["sales"] for r in events.requests)


async def test_subscription_from_now_on_resumes_from_a_cursor_once_it_has_one() -> None:
    events = Events(([], None), ([9], None), ([], grpc.StatusCode.INTERNAL))
    server, address = await serve(events)
    async with Client(address, "zg_key", retry=FAST) as client:
        with pytest.raises(grpc.aio.AioRpcError):
            await follow(client.subscribe(only_new=True), [])
    await server.stop(None)
    requests = [(r.from_cursor, r.only_new) for r in events.requests]
    assert requests == [(0, True), (0, True), (9, False)]


async def test_tls_with_a_client_certificate(mtls_gateway: Gateway, pki: Pki) -> None:  # noqa: F811
    address = f"127.0.0.1:{mtls_gateway.port}"
    async with Client(address, tls=Tls(pki.ca.cert, pki.client.cert, pki.client.key)) as client:
        assert await client.health(timeout=10) == "SERVING"
    async with Client(address, tls=Tls(pki.ca.cert)) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.health(timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
