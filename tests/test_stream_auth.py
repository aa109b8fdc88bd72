"""Server streams opened before their API key was revoked end UNAUTHENTICATED: the key is
checked again while they are open (here every 50 ms; the auth cache adds up to 1 s)."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio

from tests.conftest import RunningGateway, auth, started_gateway
from tests.rpc import expect_error
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import event_pb2_grpc, instance_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb


async def revoke(running: RunningGateway, key: str) -> None:
    engine = await open_database(running.database_url)
    try:
        assert await ApiKeyRepository(engine).revoke(key.split("_")[1])
    finally:
        await engine.dispose()


async def drain(stream: grpc.aio.UnaryStreamCall[object, object]) -> None:
    """Reads to the end (with read(): these streams were read that way already)."""
    while await stream.read() is not grpc.aio.EOF:
        pass


async def test_revoking_a_key_ends_its_open_subscribe_and_connect_streams(
    tmp_path: Path,
) -> None:
    async with started_gateway(tmp_path, stream_auth_recheck_seconds=0.05) as running:
        revoked, kept = await running.new_key("acme"), await running.new_key("acme")
        events = event_pb2_grpc.EventServiceStub(running.channel)
        instances = instance_pb2_grpc.InstanceServiceStub(running.channel)
        doomed = events.Subscribe(epb.SubscribeRequest(only_new=True), metadata=auth(revoked))
        survivor = events.Subscribe(epb.SubscribeRequest(only_new=True), metadata=auth(kept))
        await doomed.initial_metadata()
        await survivor.initial_metadata()
        await instances.CreateInstance(
            ipb.CreateInstanceRequest(instance_id="pairing"), metadata=auth(revoked)
        )
        # Pairing streams QR codes for seconds: open long enough to outlive the key.
        connect = instances.Connect(
            ipb.ConnectRequest(instance_id="pairing"), metadata=auth(revoked)
        )
        assert (await connect.read()).WhichOneof("update")  # type: ignore[union-attr]

        await revoke(running, revoked)

        for stream in (doomed, connect):
            info, _ = await expect_error(
                drain(stream),  # type: ignore[arg-type]
                grpc.StatusCode.UNAUTHENTICATED,
            )
            assert info.reason == "UNAUTHENTICATED"
        # The other key's stream was checked as often and is still open: it sees what comes.
        await instances.CreateInstance(
            ipb.CreateInstanceRequest(instance_id="later"), metadata=auth(kept)
        )
        watching = instances.Connect(ipb.ConnectRequest(instance_id="later"), metadata=auth(kept))
        await watching.read()
        seen = await survivor.read()
        assert isinstance(seen, epb.SubscribeResponse)
        assert seen.event.instance_id in {"pairing", "later"}
        watching.cancel()
        survivor.cancel()
