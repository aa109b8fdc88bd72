"""Any node serves any call: on a node that does not own the instance, an instance-bound call
is forwarded to the owner over the node-to-node channel and answers exactly as on the owner
(responses, streams, status codes and `google.rpc` details), over gRPC and over the HTTP
port. Real `zapgate serve --cluster` nodes on one PostgreSQL, simulator engine."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from google.rpc import status_pb2

from tests.cluster_nodes import CLUSTER_SECRET, Cluster, client_of, until
from tests.conftest import gateway_config
from tests.connect_http import ConnectFailure, unary_json
from tests.messaging import FAST_POLICY, Messenger
from tests.postgres import create_database
from tests.server_process import zapgate
from tests.sim_client import SimClient
from tests.test_tls import Pki, pki, write
from zapgate.gateway.cluster.node_proof import NodeProof
from zapgate.gateway.cluster.owner_bound import ANY_NODE, OWNER_BOUND
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.config import TlsConfig
from zapgate.gateway.rpc.access import REQUIRED_ROLES
from zapgate.gateway.server import Gateway
from zapgate.v1 import contact_pb2, contact_pb2_grpc, event_pb2, message_pb2
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

S = pb.InstanceState
M = message_pb2.MessageState
DETAILS = "grpc-status-details-bin"
PHONE = "+5511955500001"
CONTACT = "+5511955500777"

__all__ = ["pki"]  # the fixture, shared with test_tls

_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_fwd_{os.getpid()}_{next(_databases)}")


@asynccontextmanager
async def two_nodes(tmp_path: Path, postgres_url: str) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, postgres_url)
    try:
        cluster.start("a")
        cluster.start("b")
        yield cluster
    finally:
        cluster.close()


async def error_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value


def status_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    """Code, message and the google.rpc.Status with its details, as a client sees them."""
    details = dict(error.trailing_metadata() or ()).get(DETAILS)
    assert isinstance(details, bytes), f"no {DETAILS} in {error}"
    return error.code(), str(error.details()), status_pb2.Status.FromString(details)


async def download(messenger: Messenger, instance_id: str, message_id: str) -> bytes:
    request = message_pb2.DownloadMediaRequest(instance_id=instance_id, message_id=message_id)
    chunks = messenger.stub.DownloadMedia(request, metadata=messenger.metadata)
    return b"".join([chunk.data async for chunk in chunks])


def test_every_public_rpc_is_either_owner_bound_or_served_anywhere() -> None:
    every = {f"{service}/{name}" for service, methods in REQUIRED_ROLES.items() for name in methods}
    assert not OWNER_BOUND & ANY_NODE
    assert every == OWNER_BOUND | ANY_NODE


@pytest.mark.parametrize("secret", ["", "too-short"])
async def test_a_node_without_a_cluster_secret_is_refused_with_a_reason(
    tmp_path: Path, secret: str
) -> None:
    refused = await asyncio.to_thread(
        zapgate,
        "serve",
        "--cluster",
        "--cluster-secret",
        secret,
        "--data-dir",
        str(tmp_path / "data"),
        "--master-key-file",
        str(Cluster(tmp_path, "").key_file),
    )
    assert refused.returncode != 0
    assert "--cluster needs the secret every node shares" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_pairing_and_simulator_calls_through_a_node_that_does_not_own_the_instance(
    tmp_path: Path, postgres_url: str
) -> None:
    async with two_nodes(tmp_path, postgres_url) as cluster:
        key = await cluster.new_key("acme")
        async with client_of(cluster.nodes["a"], key) as on_a:
            await on_a.create("i0")
            # a takes the instance (its first QR proves it), then the caller goes away.
            async for update in on_a.connect("i0"):
                if update.HasField("qr_code"):
                    break
        assert (await cluster.leases())["i0"] == ("a", 1)

        async with client_of(cluster.nodes["b"], key) as on_b:
            qr_codes = 0
            result = None
            async for update in on_b.connect("i0"):  # relayed from a
                if update.HasField("qr_code"):
                    qr_codes += 1
                    await on_b.scan("i0", update.qr_code.code, PHONE)  # forwarded to a
                if update.HasField("result"):
                    result = update.result
            assert qr_codes >= 1
            assert result is not None
            assert result.outcome == pb.CONNECT_OUTCOME_CONNECTED
            assert result.instance.jid.startswith("5511955500001:")
            assert (await on_b.get("i0")).state == S.INSTANCE_STATE_CONNECTED
        assert (await cluster.leases())["i0"] == ("a", 1)  # never moved to b


async def test_calls_on_the_non_owner_answer_exactly_as_on_the_owner(
    tmp_path: Path, postgres_url: str
) -> None:
    async with two_nodes(tmp_path, postgres_url) as cluster:
        key = await cluster.new_key("acme")
        async with (
            client_of(cluster.nodes["a"], key) as on_a,
            client_of(cluster.nodes["b"], key) as on_b,
        ):
            owner, other = Messenger(on_a), Messenger(on_b)
            await owner.ready("i0", PHONE)
            assert (await cluster.leases())["i0"] == ("a", 1)

            # UpdateInstance with a new send policy reaches the owner's scheduler.
            capped = pb.SendPolicy()
            capped.CopyFrom(FAST_POLICY)
            capped.per_day = capped.warmup_first_day_cap = 7
            await other.set_policy("i0", capped)
            stats_request = pb.GetInstanceStatsRequest(instance_id="i0")
            stats_a = await on_a.instances.GetInstanceStats(stats_request, metadata=on_a.metadata)
            assert stats_a.stats.remaining_day == 7
            stats_b = await on_b.instances.GetInstanceStats(stats_request, metadata=on_b.metadata)
            assert stats_b == stats_a

            # Paused on b: the owner's scheduler holds the message until resumed on b.
            pause = pb.PauseSendingRequest(instance_id="i0", reason="from b")
            await on_b.instances.PauseSending(pause, metadata=on_b.metadata)
            stats = await on_a.instances.GetInstanceStats(stats_request, metadata=on_a.metadata)
            assert stats.stats.paused_reason == "from b"
            sent = await other.send_text("i0", CONTACT, "olá de b")
            assert sent.state == M.MESSAGE_STATE_QUEUED
            stats = await on_a.instances.GetInstanceStats(stats_request, metadata=on_a.metadata)
            assert stats.stats.queue_depth == 1
            resume = pb.ResumeSendingRequest(instance_id="i0")
            await on_b.instances.ResumeSending(resume, metadata=on_b.metadata)
            await other.wait_message("i0", sent.id, lambda m: m.state == M.MESSAGE_STATE_DELIVERED)
            # The simulated phone (in a's worker) got it; b reads the same list.
            received_a, received_b = await owner.received("i0"), await other.received("i0")
            assert [m.text for m in received_a] == ["olá de b"]
            assert received_b == received_a

            # Engine calls: number checks, media downloads.
            await on_b.sim.SetRegisteredNumbers(
                spb.SetRegisteredNumbersRequest(instance_id="i0", phones=[CONTACT]),
                metadata=on_b.metadata,
            )
            contacts_b = contact_pb2_grpc.ContactServiceStub(on_b.channel)
            check = contact_pb2.CheckNumbersRequest(instance_id="i0", phones=[CONTACT])
            [checked] = (await contacts_b.CheckNumbers(check, metadata=on_b.metadata)).results
            assert (checked.on_whatsapp, checked.jid) == (True, "5511955500777@s.whatsapp.net")
            data = os.urandom(300_000)  # several chunks
            injected = await on_b.sim.InjectIncomingMessage(
                spb.InjectIncomingMessageRequest(
                    instance_id="i0",
                    from_phone=CONTACT,
                    media=spb.InjectedMedia(
                        kind=event_pb2.MEDIA_KIND_DOCUMENT,
                        data=data,
                        mime_type="application/pdf",
                        file_name="a.pdf",
                    ),
                ),
                metadata=on_b.metadata,
            )
            await _until_stored(owner, injected.message_id)
            assert await download(other, "i0", injected.message_id) == data
            assert await download(owner, "i0", injected.message_id) == data

            # Errors come back with the owner's code, message and details.
            for messenger in (owner, other):
                missing = await error_of(download(messenger, "i0", "3A0000UNKNOWN"))
                code, message, status = status_of(missing)
                assert code == grpc.StatusCode.NOT_FOUND
                if messenger is owner:
                    expected = (code, message, status)
                else:
                    assert (code, message, status) == expected
            bad_send = message_pb2.SendMessageRequest(
                instance_id="i0", phone="123", text=message_pb2.Text(body="x")
            )
            answers = [
                status_of(await error_of(m.stub.SendMessage(bad_send, metadata=m.metadata)))
                for m in (owner, other)
            ]
            assert answers[0][0] == grpc.StatusCode.INVALID_ARGUMENT
            assert answers[0] == answers[1]


async def _until_stored(messenger: Messenger, message_id: str) -> None:
    """The inbox commits an injected message shortly after the engine reports it."""

    async def stored() -> bool:
        request = message_pb2.DownloadMediaRequest(instance_id="i0", message_id=message_id)
        try:
            async for _ in messenger.stub.DownloadMedia(request, metadata=messenger.metadata):
                return True
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        return False

    await until(stored, "the injected media stored")


async def test_forwarding_keeps_tenancy_and_refuses_forged_node_calls(
    tmp_path: Path, postgres_url: str
) -> None:
    async with two_nodes(tmp_path, postgres_url) as cluster:
        key = await cluster.new_key("acme")
        intruder = await cluster.new_key("intruder")
        async with client_of(cluster.nodes["a"], key) as on_a:
            await Messenger(on_a).ready("i0", PHONE)

        # Another tenant's key names the instance on either node: NOT_FOUND, the same.
        pause = pb.PauseSendingRequest(instance_id="i0")
        answers = []
        for node in ("a", "b"):
            async with client_of(cluster.nodes[node], intruder) as client:
                error = await error_of(
                    client.instances.PauseSending(pause, metadata=client.metadata)
                )
                answers.append(status_of(error))
        assert answers[0][0] == grpc.StatusCode.NOT_FOUND
        assert answers[0] == answers[1]

        # A call claiming to come from a node needs the cluster's secret.
        request = pb.GetInstanceStatsRequest(instance_id="i0")
        method = "/zapgate.v1.InstanceService/GetInstanceStats"
        forged = NodeProof("not-the-cluster-secret").headers("b", method)
        marker_only = (forged[0],)
        async with client_of(cluster.nodes["a"], key) as on_a:
            for headers in (forged, marker_only):
                refused = await error_of(
                    on_a.instances.GetInstanceStats(request, metadata=(*on_a.metadata, *headers))
                )
                assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            genuine = NodeProof(CLUSTER_SECRET).headers("b", method)
            served = await on_a.instances.GetInstanceStats(
                request, metadata=(*on_a.metadata, *genuine)
            )
            assert served.HasField("stats")
        # A forwarded call is never forwarded again: a non-owner answers it UNAVAILABLE.
        async with client_of(cluster.nodes["b"], key) as on_b:
            hop = NodeProof(CLUSTER_SECRET).headers("a", method)
            again = await error_of(
                on_b.instances.GetInstanceStats(request, metadata=(*on_b.metadata, *hop))
            )
            assert again.code() == grpc.StatusCode.UNAVAILABLE
            assert "served by node a" in str(again.details())


async def test_the_http_port_of_a_non_owner_forwards_too(tmp_path: Path, postgres_url: str) -> None:
    async with two_nodes(tmp_path, postgres_url) as cluster:
        key = await cluster.new_key("acme")
        async with client_of(cluster.nodes["a"], key) as on_a:
            await Messenger(on_a).ready("i0", PHONE)
            await on_a.sim.SetRegisteredNumbers(
                spb.SetRegisteredNumbersRequest(instance_id="i0", phones=[CONTACT]),
                metadata=on_a.metadata,
            )
        answers = {}
        for node in ("a", "b"):
            base = f"http://127.0.0.1:{cluster.nodes[node].http_port}"
            async with httpx.AsyncClient(base_url=base) as http:
                status, body = await unary_json(
                    http,
                    "/zapgate.v1.ContactService/CheckNumbers",
                    {"instanceId": "i0", "phones": [CONTACT]},
                    key,
                )
                assert status == 200, body
                bad_status, bad = await unary_json(
                    http,
                    "/zapgate.v1.MessageService/SendMessage",
                    {"instanceId": "i0", "phone": "123", "text": {"body": "x"}},
                    key,
                )
            answers[node] = (body, bad_status, ConnectFailure.from_json(bad))
        assert answers["a"][0]["results"][0]["onWhatsapp"] is True
        assert answers["b"][0]["results"][0].pop("cached") is True  # a's answer, cached
        assert answers["a"][2].code == "invalid_argument"
        assert ("phone" in dict(answers["a"][2].violations)) is True
        assert answers["a"] == answers["b"]


async def test_an_owner_that_cannot_be_reached_is_named_as_before_forwarding(
    tmp_path: Path, postgres_url: str
) -> None:
    """A dead owner's lease lasts until its TTL: meanwhile the non-owner answers UNAVAILABLE
    naming the owner (the client retries; the instance is then taken over)."""
    async with two_nodes(tmp_path, postgres_url) as cluster:
        key = await cluster.new_key("acme")
        async with client_of(cluster.nodes["a"], key) as on_a:
            await Messenger(on_a).ready("i0", PHONE)
        async with client_of(cluster.nodes["b"], key) as on_b:
            request = pb.GetInstanceStatsRequest(instance_id="i0")
            await on_b.instances.GetInstanceStats(request, metadata=on_b.metadata)  # forwarded
            cluster.nodes["a"].process.kill()
            await asyncio.to_thread(cluster.nodes["a"].wait)
            refused = await error_of(
                on_b.instances.GetInstanceStats(request, metadata=on_b.metadata)
            )
        code, message, status = status_of(refused)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert f"served by node a ({cluster.nodes['a'].address})" in message
        assert len(status.details) == 1


async def test_nodes_forward_to_each_other_over_mutual_tls(
    tmp_path: Path, postgres_url: str, pki: Pki
) -> None:
    """Both nodes require client certificates signed by the CA: a forwarding node presents
    its own certificate and checks the owner's against that CA."""
    cert, key = write(tmp_path, pki.server, "node")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(pki.ca.cert)
    cluster = Cluster(tmp_path, postgres_url)  # its master key and database, no processes
    key_file = cluster.key_file

    def node(name: str) -> Gateway:
        settings = ClusterSettings(node_id=name, lease_ttl_seconds=20.0, secret=CLUSTER_SECRET)
        tls = TlsConfig(cert, key, ca_file)
        config = gateway_config(
            tmp_path / name, postgres_url, cluster=settings, master_key_file=key_file, tls=tls
        )
        return Gateway(config)

    credentials = grpc.ssl_channel_credentials(pki.ca.cert, pki.client.key, pki.client.cert)
    a, b = node("a"), node("b")
    await a.start()
    try:
        await b.start()
        api_key = await cluster.new_key("acme")
        async with (
            grpc.aio.secure_channel(f"127.0.0.1:{a.port}", credentials) as to_a,
            grpc.aio.secure_channel(f"127.0.0.1:{b.port}", credentials) as to_b,
        ):
            on_a, on_b = SimClient(to_a, api_key), SimClient(to_b, api_key)
            await Messenger(on_a).ready("i0", PHONE)
            pause = pb.PauseSendingRequest(instance_id="i0", reason="over tls")
            await on_b.instances.PauseSending(pause, metadata=on_b.metadata)  # forwarded
            stats = await on_a.instances.GetInstanceStats(
                pb.GetInstanceStatsRequest(instance_id="i0"), metadata=on_a.metadata
            )
            assert stats.stats.paused_reason == "over tls"  # a's scheduler holds it
        assert (await cluster.leases())["i0"] == ("a", 1)
    finally:
        await b.stop(grace=0)
        await a.stop(grace=0)
