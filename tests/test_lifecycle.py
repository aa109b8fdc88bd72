"""The connection lifecycle over real gRPC, with the simulator in a real worker process."""

from __future__ import annotations

import asyncio
import io

import grpc
import pytest
import zxingcpp
from PIL import Image

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient, collect
from tests.test_events import subscribed, take
from zapgate.engine.v1 import worker_pb2
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

S = pb.InstanceState
R = pb.StateReason
PHONE = "+5511988887777"


@pytest.fixture
async def client(running: RunningGateway, tenant: str) -> SimClient:
    return await SimClient.for_tenant(running, tenant)


def kinds(updates: list[pb.ConnectResponse]) -> list[str]:
    return [str(u.WhichOneof("update")) for u in updates]


async def hosted(running: RunningGateway) -> int:
    total = 0
    for slot in running.gateway.runtime.pool.slots:
        assert slot.stub is not None
        total += (await slot.stub.Ping(worker_pb2.PingRequest())).hosted
    return total


async def test_qr_scan_connects_and_stores_the_account(client: SimClient) -> None:
    await client.create("qr")
    updates = []
    async for update in client.connect("qr"):
        updates.append(update)
        if update.HasField("qr_code"):
            await client.scan("qr", update.qr_code.code, PHONE)
    assert kinds(updates) == ["state_change", "state_change", "qr_code", "state_change", "result"]
    assert [u.state_change.state for u in updates if u.HasField("state_change")] == [
        S.INSTANCE_STATE_CONNECTING,
        S.INSTANCE_STATE_PAIRING,
        S.INSTANCE_STATE_CONNECTED,
    ]
    result = updates[-1].result
    assert result.outcome == pb.CONNECT_OUTCOME_CONNECTED
    assert result.instance.state == S.INSTANCE_STATE_CONNECTED
    assert result.instance.state_reason == R.STATE_REASON_PAIRED
    assert result.instance.jid.startswith("5511988887777:")
    assert result.instance.phone == PHONE
    assert (await client.get("qr")) == result.instance


async def test_qr_png_decodes_to_the_same_code(client: SimClient) -> None:
    await client.create("png")
    async for update in client.connect("png"):
        if update.HasField("qr_code"):
            qr = update.qr_code
            break
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr.png)))
    assert [d.text for d in decoded] == [qr.code]
    assert qr.code.count(",") == 3  # ref,noiseKey,identityKey,advSecret
    assert qr.index == 0
    assert qr.expire_time.ToMicroseconds() > 0


async def test_connect_on_a_connected_instance_answers_at_once(client: SimClient) -> None:
    await client.create("twice")
    await client.pair("twice", PHONE)
    updates = await collect(client.connect("twice"))
    assert kinds(updates) == ["result"]
    assert updates[0].result.outcome == pb.CONNECT_OUTCOME_CONNECTED


async def test_pair_code_is_requested_after_the_first_qr(client: SimClient) -> None:
    await client.create("code")
    updates = []
    async for update in client.connect("code", phone=PHONE):
        updates.append(update)
        if update.HasField("pair_code"):
            await client.sim.EnterPairCode(
                spb.EnterPairCodeRequest(instance_id="code", code=update.pair_code.code),
                metadata=client.metadata,
            )
    order = kinds(updates)
    assert order.index("qr_code") < order.index("pair_code")
    code = next(u.pair_code.code for u in updates if u.HasField("pair_code"))
    assert len(code.replace("-", "")) == 8
    assert updates[-1].result.outcome == pb.CONNECT_OUTCOME_CONNECTED
    assert updates[-1].result.instance.phone == PHONE


async def test_a_wrong_pair_code_is_rejected(client: SimClient) -> None:
    await client.create("badcode")
    async for update in client.connect("badcode", phone=PHONE):
        if update.HasField("pair_code"):
            info, _ = await expect_error(
                client.sim.EnterPairCode(
                    spb.EnterPairCodeRequest(instance_id="badcode", code="ZZZZ-ZZZZ"),
                    metadata=client.metadata,
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
            assert info.reason == "SIMULATION_REJECTED"
            break


async def test_qr_times_out_after_six_codes(client: SimClient) -> None:
    await client.create("timeout")
    updates = await collect(client.connect("timeout"))
    assert [u.qr_code.index for u in updates if u.HasField("qr_code")] == [0, 1, 2, 3, 4, 5]
    assert updates[-1].result.outcome == pb.CONNECT_OUTCOME_QR_TIMEOUT
    assert sum(u.HasField("result") for u in updates) == 1
    instance = await client.get("timeout")
    assert (instance.state, instance.state_reason) == (
        S.INSTANCE_STATE_DISCONNECTED,
        R.STATE_REASON_QR_TIMEOUT,
    )


async def test_scanning_an_expired_or_wrong_code_fails(client: SimClient) -> None:
    await client.create("expired")
    codes = []
    async for update in client.connect("expired"):
        if update.HasField("qr_code"):
            codes.append(update.qr_code.code)
            if len(codes) == 2:
                break
    for code in (codes[0], "2@forged,AAAA,BBBB,CCCC"):
        info, _ = await expect_error(
            client.scan("expired", code, PHONE), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert info.reason == "SIMULATION_REJECTED"


async def test_two_watchers_see_the_same_codes(client: SimClient) -> None:
    await client.create("shared")
    first = client.connect("shared")
    seen_first = []
    async for update in first:
        if update.HasField("qr_code"):
            seen_first.append(update.qr_code.code)
            break
    second = client.connect("shared")
    seen_second = []
    async for update in second:
        if update.HasField("qr_code"):
            seen_second.append(update.qr_code.code)
            break
    assert seen_second == seen_first
    await client.scan("shared", seen_first[0], PHONE)
    rest_first = [u async for u in first]
    rest_second = [u async for u in second]
    assert rest_first[-1].result.outcome == pb.CONNECT_OUTCOME_CONNECTED
    assert rest_second[-1].result == rest_first[-1].result


async def test_a_cancelled_watcher_leaks_nothing(
    client: SimClient, running: RunningGateway
) -> None:
    await client.create("cancel")
    before = await hosted(running)
    stream = client.connect("cancel")
    async for update in stream:
        if update.HasField("qr_code"):
            break
    assert await hosted(running) == before + 1
    stream.cancel()  # type: ignore[attr-defined]
    instance = await client.wait_state("cancel", S.INSTANCE_STATE_DISCONNECTED)
    assert instance.state_reason == R.STATE_REASON_PAIRING_ABANDONED
    assert await hosted(running) == before
    live = running.gateway.runtime.supervisor._lives["/".join(_key_of(running, "cancel"))]
    assert not live.watchers
    assert live.run_id == 0


async def test_drop_reconnects_with_backoff_without_a_qr(client: SimClient) -> None:
    await client.create("drop")
    paired = (await client.pair("drop", PHONE)).instance
    await client.sim.DropConnection(
        spb.DropConnectionRequest(instance_id="drop"), metadata=client.metadata
    )
    updates = await collect(client.connect("drop"))
    states = [
        (u.state_change.state, u.state_change.reason) for u in updates if u.HasField("state_change")
    ]
    assert "qr_code" not in kinds(updates)
    assert updates[-1].result.outcome == pb.CONNECT_OUTCOME_CONNECTED
    assert (S.INSTANCE_STATE_CONNECTED, R.STATE_REASON_CONNECTED) in states
    again = await client.get("drop")
    assert again.jid == paired.jid
    assert again.state_reason == R.STATE_REASON_CONNECTED


async def test_logout_from_phone_is_final(client: SimClient, running: RunningGateway) -> None:
    await client.create("phone-logout")
    await client.pair("phone-logout", PHONE)
    await client.sim.LogoutFromPhone(
        spb.LogoutFromPhoneRequest(instance_id="phone-logout"), metadata=client.metadata
    )
    instance = await client.wait_state("phone-logout", S.INSTANCE_STATE_LOGGED_OUT)
    assert instance.state_reason == R.STATE_REASON_LOGGED_OUT_FROM_PHONE
    assert instance.jid == ""
    await asyncio.sleep(5 * 0.2)  # several backoff caps: a reconnect would have happened
    still = await client.get("phone-logout")
    assert still.state == S.INSTANCE_STATE_LOGGED_OUT
    assert still.state_change_time == instance.state_change_time
    store_dir = running.gateway.runtime.supervisor.runtime_dir_of(*_key_of(running, "phone-logout"))
    assert not store_dir.exists()


def _key_of(running: RunningGateway, instance_id: str) -> tuple[str, str]:
    supervisor = running.gateway.runtime.supervisor
    assert supervisor is not None
    key = next(k for k in supervisor._lives if k.endswith(f"/{instance_id}"))
    tenant, _, name = key.partition("/")
    return tenant, name


async def test_temporary_ban_then_reconnect_after_expiry(client: SimClient) -> None:
    await client.create("ban")
    await client.pair("ban", PHONE)
    await client.sim.TemporaryBan(
        spb.TemporaryBanRequest(instance_id="ban", code=102, expires_in_seconds=1.0),
        metadata=client.metadata,
    )
    banned = await client.wait_state("ban", S.INSTANCE_STATE_BANNED)
    assert (banned.state_reason, banned.ban_code) == (R.STATE_REASON_TEMPORARY_BAN, 102)
    assert banned.ban_expire_time.ToMicroseconds() > banned.state_change_time.ToMicroseconds()
    early = await collect(client.connect("ban"))
    assert early[-1].result.outcome == pb.CONNECT_OUTCOME_BANNED
    back = await client.wait_state("ban", S.INSTANCE_STATE_CONNECTED)
    assert back.state_change_time.ToMicroseconds() >= banned.ban_expire_time.ToMicroseconds()
    assert back.ban_code == 0


async def test_stream_replaced_is_an_error_without_reconnects(client: SimClient) -> None:
    await client.create("replaced")
    await client.pair("replaced", PHONE)
    await client.sim.StreamReplaced(
        spb.StreamReplacedRequest(instance_id="replaced"), metadata=client.metadata
    )
    failed = await client.wait_state("replaced", S.INSTANCE_STATE_ERROR)
    assert failed.state_reason == R.STATE_REASON_STREAM_REPLACED
    await asyncio.sleep(5 * 0.2)
    assert (await client.get("replaced")).state_change_time == failed.state_change_time


async def test_keepalive_failures_are_reported_and_cleared(client: SimClient) -> None:
    await client.create("keepalive")
    await client.pair("keepalive", PHONE)
    request = spb.SetKeepAliveRequest(instance_id="keepalive", failing=True)
    await client.sim.SetKeepAlive(request, metadata=client.metadata)
    failing = await client.wait_for("keepalive", lambda i: i.keepalive_failing)
    assert failing.state == S.INSTANCE_STATE_CONNECTED
    request.failing = False
    await client.sim.SetKeepAlive(request, metadata=client.metadata)
    await client.wait_for("keepalive", lambda i: not i.keepalive_failing)


async def test_logout_wipes_the_session_and_the_next_connect_shows_a_qr(
    client: SimClient, running: RunningGateway
) -> None:
    await client.create("logout")
    await client.pair("logout", PHONE)
    reply = await client.instances.Logout(
        pb.LogoutRequest(instance_id="logout"), metadata=client.metadata
    )
    assert reply.instance.state == S.INSTANCE_STATE_LOGGED_OUT
    assert reply.instance.state_reason == R.STATE_REASON_LOGOUT_REQUESTED
    assert not running.gateway.runtime.supervisor.runtime_dir_of(
        *_key_of(running, "logout")
    ).exists()
    stream = client.connect("logout")
    async for update in stream:
        if update.HasField("qr_code"):
            break
    else:
        raise AssertionError("no QR code after logout")
    stream.cancel()  # type: ignore[attr-defined]


async def test_delete_stops_the_connection_and_wipes_the_session(
    client: SimClient, running: RunningGateway
) -> None:
    await client.create("doomed")
    await client.pair("doomed", PHONE)
    tenant, name = _key_of(running, "doomed")
    runtime_dir = running.gateway.runtime.supervisor.runtime_dir_of(tenant, name)
    assert (runtime_dir / "session.db").exists()
    before = await hosted(running)
    await client.instances.DeleteInstance(
        pb.DeleteInstanceRequest(instance_id="doomed"), metadata=client.metadata
    )
    assert not runtime_dir.exists()
    assert await hosted(running) == before - 1


async def test_simulator_calls_on_an_idle_instance_fail_clearly(client: SimClient) -> None:
    await client.create("idle")
    info, _ = await expect_error(
        client.sim.DropConnection(
            spb.DropConnectionRequest(instance_id="idle"), metadata=client.metadata
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert info.reason == "INSTANCE_NOT_RUNNING"


async def test_simulator_input_is_validated(client: SimClient) -> None:
    await client.create("validated")
    _, violations = await expect_error(
        client.scan("validated", "", "12345"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert {v[0] for v in violations} == {"phone", "code"}
    _, violations = await expect_error(
        client.sim.TemporaryBan(
            spb.TemporaryBanRequest(instance_id="validated"), metadata=client.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [v[0] for v in violations] == ["expires_in_seconds"]


async def test_reconnect_redials_an_unhealthy_instance_without_a_qr(client: SimClient) -> None:
    await client.create("unhealthy")
    paired = await client.pair("unhealthy", PHONE)
    request = spb.SetKeepAliveRequest(instance_id="unhealthy", failing=True)
    await client.sim.SetKeepAlive(request, metadata=client.metadata)
    await client.wait_for("unhealthy", lambda i: i.keepalive_failing)
    events = await subscribed(
        Messenger(client),
        only_new=True,
        instance_ids=["unhealthy"],
        types=[epb.EVENT_TYPE_STATE_CHANGED, epb.EVENT_TYPE_QR_UPDATED],
    )

    reply = await client.instances.Reconnect(
        pb.ReconnectRequest(instance_id="unhealthy"), metadata=client.metadata
    )
    assert reply.instance.state == S.INSTANCE_STATE_CONNECTING
    assert reply.instance.state_reason == R.STATE_REASON_RECONNECT_REQUESTED
    seen = await take(events, 2)  # a QR code would come between these two
    assert [
        (e.WhichOneof("payload"), e.state_changed.state, e.state_changed.reason) for e in seen
    ] == [
        ("state_changed", S.INSTANCE_STATE_CONNECTING, R.STATE_REASON_RECONNECT_REQUESTED),
        ("state_changed", S.INSTANCE_STATE_CONNECTED, R.STATE_REASON_CONNECTED),
    ]
    after = await client.get("unhealthy")
    assert after.state == S.INSTANCE_STATE_CONNECTED
    assert after.jid == paired.instance.jid  # the same linked device: its saved session
    assert not after.keepalive_failing


async def test_reconnect_needs_a_saved_session(client: SimClient) -> None:
    await client.create("never-paired")
    await client.create("gone")
    await client.pair("gone", PHONE)
    await client.instances.Logout(pb.LogoutRequest(instance_id="gone"), metadata=client.metadata)
    for instance_id in ("never-paired", "gone"):
        info, _ = await expect_error(
            client.instances.Reconnect(
                pb.ReconnectRequest(instance_id=instance_id), metadata=client.metadata
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert info.reason == "INSTANCE_NOT_PAIRED"
        assert info.metadata["instance_id"] == instance_id
    assert (await client.get("never-paired")).state == S.INSTANCE_STATE_DISCONNECTED
    assert (await client.get("gone")).state == S.INSTANCE_STATE_LOGGED_OUT
