"""The real neonize engine behind the gateway, offline: a real whatsmeow store is created,
snapshotted and restored byte for byte; dialing through a proxy nobody listens on fails with
the real dial error and the supervisor retries on its backoff schedule; the simulator's service
is not offered."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.conftest import FAST_BACKOFF, RunningGateway, started_gateway
from tests.postgres import free_port
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_neonize_offline import play
from zapgate.gateway.connections.session_keeper import SessionKeeper
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.sessions.vault import Keyring, MasterKey
from zapgate.v1 import event_pb2
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

R = pb.StateReason


async def test_a_real_whatsmeow_store_round_trips_byte_exact(tmp_path: Path) -> None:
    report = play("store", tmp_path)  # the real library creates and migrates it, offline
    store = Path(report["store"])
    original = store.read_bytes()
    assert original.startswith(b"SQLite format 3\x00")

    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        await InstanceRepository(engine).create(InstanceRecord("acme", "store", "s", "", 1))
        keeper = SessionKeeper(
            SnapshotRepository(engine), Keyring(MasterKey.generate()), lambda t, i: store
        )
        assert await keeper.snapshot("acme", "store")
        sealed = await SnapshotRepository(engine).latest("acme", "store")
        assert sealed is not None
        assert original not in bytes(sealed.ciphertext)
        store.unlink()
        assert await keeper.restore("acme", "store", expected_generation=sealed.generation)
    finally:
        await engine.dispose()
    assert store.read_bytes() == original


@pytest.fixture
async def neonize_gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with started_gateway(tmp_path, engine="neonize") as gateway:
        yield gateway


async def test_connect_fails_with_the_real_dial_error_and_retries_with_backoff(
    neonize_gateway: RunningGateway,
) -> None:
    # A loopback proxy port nobody listens on: the refusal is immediate and the same on every
    # machine, whatever its DNS does with web.whatsapp.com.
    closed_port = free_port()
    client = await SimClient.for_tenant(neonize_gateway, "acme")
    await client.create("real", proxy_url=f"socks5://127.0.0.1:{closed_port}")
    failures = []
    stream = client.connect("real")
    async for update in stream:
        change = update.state_change
        assert update.HasField("state_change"), update
        assert change.state == pb.INSTANCE_STATE_CONNECTING
        if change.reason == R.STATE_REASON_CONNECT_FAILED:
            failures.append(change.detail)
            if len(failures) == 4:
                break
    stream.cancel()  # type: ignore[attr-defined]
    assert all("connection refused" in detail for detail in failures), failures
    retries = [re.search(r"retry (\d+) in ([\d.]+)s", detail) for detail in failures]
    assert [int(m.group(1)) for m in retries if m] == [1, 2, 3, 4]
    delays = [float(m.group(2)) for m in retries if m]
    ceilings = [min(FAST_BACKOFF.cap_seconds, FAST_BACKOFF.base_seconds * 2**n) for n in range(4)]
    assert all(d <= c + 0.05 for d, c in zip(delays, ceilings, strict=True))
    abandoned = await client.wait_state("real", pb.INSTANCE_STATE_DISCONNECTED)
    assert abandoned.state_reason == R.STATE_REASON_PAIRING_ABANDONED


async def test_the_simulator_service_is_unimplemented_on_a_real_engine(
    neonize_gateway: RunningGateway,
) -> None:
    client = await SimClient.for_tenant(neonize_gateway, "acme")
    await client.create("real")
    info, _ = await expect_error(
        client.sim.DropConnection(
            spb.DropConnectionRequest(instance_id="real"), metadata=client.metadata
        ),
        grpc.StatusCode.UNIMPLEMENTED,
    )
    assert info.reason == "SIMULATOR_DISABLED"


async def test_abandoned_pairings_stay_abandoned(neonize_gateway: RunningGateway) -> None:
    """Every Connect watcher hangs up while the dial keeps failing: each never-paired
    instance ends PAIRING_ABANDONED and stays there (a failed dial of the halted run used to
    arm one more retry, which then dialled forever with nobody watching)."""
    closed_port = free_port()
    client = await SimClient.for_tenant(neonize_gateway, "acme")
    ids = [f"lead{n:02d}" for n in range(30)]
    for instance_id in ids:
        await client.create(instance_id, proxy_url=f"socks5://127.0.0.1:{closed_port}")

    async def watch_until_a_failure(instance_id: str) -> None:
        stream = client.connect(instance_id)
        async for update in stream:
            if update.state_change.reason == R.STATE_REASON_CONNECT_FAILED:
                break
        stream.cancel()  # type: ignore[attr-defined]

    await asyncio.gather(*(watch_until_a_failure(i) for i in ids))
    for instance_id in ids:
        done = await client.wait_state(instance_id, pb.INSTANCE_STATE_DISCONNECTED)
        assert done.state_reason == R.STATE_REASON_PAIRING_ABANDONED
    events = neonize_gateway.gateway.runtime.events
    settled = await events.last_cursor()
    await asyncio.sleep(1.0)  # five times the backoff cap: any stray retry would have run
    later = await events.read("acme", settled, ids, [event_pb2.EVENT_TYPE_STATE_CHANGED], 100)
    assert later == []
    for instance_id in ids:
        assert (await client.get(instance_id)).state == pb.INSTANCE_STATE_DISCONNECTED
