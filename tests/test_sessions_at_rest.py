"""Encrypted session persistence: restarts (clean, kill -9, reboot) never force a re-pair,
no secret reaches persistent disk, and a damaged snapshot fails alone and stays intact."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc.aio
import pytest

from tests.conftest import gateway_config
from tests.messaging import Messenger
from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.v1 import event_pb2
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

S = pb.InstanceState
R = pb.StateReason
SERVER_FLAGS = (
    "--engine",
    "sim",
    "--engine-workers",
    "2",
    "--sim-connect-seconds",
    "0.02",
    "--reconnect-base-seconds",
    "0.05",
    "--reconnect-cap-seconds",
    "0.2",
)


def db_rows(data_dir: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / "zapgate.db") as db:
        return db.execute(query).fetchall()


async def make_key(data_dir: Path, tenant: str) -> str:
    engine = await open_database(f"sqlite+aiosqlite:///{data_dir / 'zapgate.db'}")
    try:
        return (await ApiKeyRepository(engine).create(tenant))[0]
    finally:
        await engine.dispose()


@asynccontextmanager
async def server_client(server: ServerProcess, key: str) -> AsyncIterator[SimClient]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield SimClient(channel, key)


async def wait_snapshotted(data_dir: Path, count: int) -> None:
    for _ in range(500):
        rows = db_rows(data_dir, "SELECT count(*) FROM session_snapshots")
        if rows[0][0] >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("snapshots never written")


async def pair_ten(server: ServerProcess, data_dir: Path) -> tuple[str, dict[str, str]]:
    key = await make_key(data_dir, "acme")
    jids = {}
    async with server_client(server, key) as client:
        for n in range(10):
            await client.create(f"s{n}")
            result = await client.pair(f"s{n}", f"+5511955550{n:03d}")
            jids[f"s{n}"] = result.instance.jid
    await wait_snapshotted(data_dir, 10)
    return key, jids


async def assert_all_back_without_qr(server: ServerProcess, key: str, jids: dict[str, str]) -> None:
    async with server_client(server, key) as client:
        for instance_id, jid in jids.items():
            back = await client.wait_state(instance_id, S.INSTANCE_STATE_CONNECTED)
            assert back.jid == jid
            assert back.state_reason == R.STATE_REASON_CONNECTED  # a stored session, no QR


@pytest.mark.parametrize(
    ("how", "reboot"),
    [("sigterm", False), ("sigterm", True), ("kill-9", False), ("kill-9", True)],
    ids=["sigterm", "sigterm-then-reboot", "kill-9", "kill-9-then-reboot"],
)
async def test_restart_reconnects_every_session_without_a_qr(
    tmp_path: Path, how: str, reboot: bool
) -> None:
    data_dir, runtime_dir = tmp_path / "data", tmp_path / "runtime"
    first = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        key, jids = await pair_ten(first, data_dir)
        if how == "sigterm":
            first.terminate()
            assert await asyncio.to_thread(first.wait) == 0
        else:
            first.process.kill()
            await asyncio.to_thread(first.wait)
    finally:
        first.close()
    if reboot:  # tmpfs does not survive a reboot: only the encrypted snapshots remain
        await asyncio.sleep(1)  # the old workers notice their core is gone and exit
        shutil.rmtree(runtime_dir)
    second = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        await assert_all_back_without_qr(second, key, jids)
    finally:
        second.close()


async def test_a_restart_logs_each_reconnect_once(tmp_path: Path) -> None:
    """After a crash and a reboot each instance's log says CONNECTING (RECONNECTING) once,
    committed by the start-up pass, then CONNECTED: the start that follows does not write
    the same state and event again."""
    data_dir, runtime_dir = tmp_path / "data", tmp_path / "runtime"
    first = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        key, jids = await pair_ten(first, data_dir)
        first.process.kill()
        await asyncio.to_thread(first.wait)
    finally:
        first.close()
    await asyncio.sleep(1)  # the old workers notice their core is gone and exit
    shutil.rmtree(runtime_dir)
    [(last_cursor,)] = db_rows(data_dir, "SELECT max(cursor) FROM events")
    second = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        await assert_all_back_without_qr(second, key, jids)
    finally:
        second.close()
    states: dict[str, list[tuple[int, int]]] = {instance_id: [] for instance_id in jids}
    query = f"SELECT instance_id, payload FROM events WHERE cursor > {last_cursor} ORDER BY cursor"
    for instance_id, payload in db_rows(data_dir, query):
        event = event_pb2.Event.FromString(payload)  # type: ignore[arg-type]
        if event.HasField("state_changed"):
            changed = event.state_changed
            states[str(instance_id)].append((changed.state, changed.reason))
    stop = (S.INSTANCE_STATE_DISCONNECTED, R.STATE_REASON_SHUTDOWN)  # the second's own stop
    for instance_id, seen in states.items():
        assert [s for s in seen if s != stop] == [
            (S.INSTANCE_STATE_CONNECTING, R.STATE_REASON_RECONNECTING),
            (S.INSTANCE_STATE_CONNECTED, R.STATE_REASON_CONNECTED),
        ], instance_id


async def test_no_session_secret_reaches_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        await pair_ten(server, data_dir)
        secrets = []
        for store in (tmp_path / "runtime").rglob("session.db"):
            with sqlite3.connect(store) as db:
                row = db.execute(
                    "SELECT noise_key, identity_key, adv_secret FROM sim_device"
                ).fetchone()
            secrets += [bytes(value) for value in row]
        assert len(secrets) == 30
        server.terminate()
        await asyncio.to_thread(server.wait)
    finally:
        server.close()
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert any(path.name == "zapgate.db" for path in files)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret not in content, f"a session key is in the clear in {path}"
            assert base64.b64encode(secret) not in content, path
            assert secret.hex().encode() not in content, path


# ---- damaged snapshots, in-process --------------------------------------------------------


@asynccontextmanager
async def gateway(tmp_path: Path, **overrides: object) -> AsyncIterator[tuple[Gateway, SimClient]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'zapgate.db'}"
    (tmp_path / "data").mkdir(exist_ok=True, mode=0o700)
    instance = Gateway(gateway_config(tmp_path, url, **overrides))
    await instance.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{instance.port}") as channel:
            key = await make_key(tmp_path / "data", "acme")
            yield instance, SimClient(channel, key)
    finally:
        await instance.stop(grace=1)


async def paired_then_stopped(tmp_path: Path, ids: list[str]) -> None:
    async with gateway(tmp_path) as (_, client):
        for n, instance_id in enumerate(ids):
            await client.create(instance_id)
            await client.pair(instance_id, f"+55119444400{n:02d}")
    shutil.rmtree(tmp_path / "runtime")  # a reboot: restore must come from the snapshots


def snapshot_row(tmp_path: Path, instance_id: str) -> tuple[object, ...]:
    columns = "generation, key_id, wrapped_key, ciphertext"
    query = f"SELECT {columns} FROM session_snapshots WHERE id = '{instance_id}'"
    return db_rows(tmp_path / "data", query)[0]


def set_snapshot(tmp_path: Path, instance_id: str, **values: object) -> None:
    assignments = ", ".join(f"{name} = ?" for name in values)
    with sqlite3.connect(tmp_path / "data" / "zapgate.db") as db:
        db.execute(
            f"UPDATE session_snapshots SET {assignments} WHERE id = ?",
            (*values.values(), instance_id),
        )


def flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


DAMAGES = {
    "tampered": lambda tmp, row: set_snapshot(tmp, "victim", ciphertext=flip_last_byte(row[3])),
    "truncated": lambda tmp, row: set_snapshot(
        tmp, "victim", ciphertext=row[3][: len(row[3]) // 3]
    ),
    "swapped": lambda tmp, row: set_snapshot(
        tmp,
        "victim",
        **dict(
            zip(
                ("generation", "key_id", "wrapped_key", "ciphertext"),
                snapshot_row(tmp, "bystander"),
                strict=True,
            )
        ),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
async def test_a_damaged_snapshot_fails_alone_and_stays_intact(tmp_path: Path, damage: str) -> None:
    await paired_then_stopped(tmp_path, ["victim", "bystander"])
    DAMAGES[damage](tmp_path, snapshot_row(tmp_path, "victim"))
    damaged = snapshot_row(tmp_path, "victim")
    async with gateway(tmp_path) as (_, client):
        failed = await client.wait_state("victim", S.INSTANCE_STATE_ERROR)
        assert failed.state_reason == R.STATE_REASON_SESSION_UNDECRYPTABLE
        assert failed.state_detail
        bystander = await client.wait_state("bystander", S.INSTANCE_STATE_CONNECTED)
        assert bystander.state_reason == R.STATE_REASON_CONNECTED
        await asyncio.sleep(0.3)  # a few snapshot polls: none may touch the damaged blob
    assert snapshot_row(tmp_path, "victim") == damaged


async def test_an_older_generation_is_refused_and_kept(tmp_path: Path) -> None:
    await paired_then_stopped(tmp_path, ["victim", "bystander"])
    old = snapshot_row(tmp_path, "victim")
    async with gateway(tmp_path) as (_, client):
        await client.wait_state("victim", S.INSTANCE_STATE_CONNECTED)
        # A ban is written to the session store: the next snapshot is a new generation.
        await client.sim.TemporaryBan(
            spb.TemporaryBanRequest(instance_id="victim", expires_in_seconds=0.2),
            metadata=client.metadata,
        )
        await client.wait_state("victim", S.INSTANCE_STATE_BANNED)
        await client.wait_state("victim", S.INSTANCE_STATE_CONNECTED)
        for _ in range(200):
            if snapshot_row(tmp_path, "victim")[0] > old[0]:
                break
            await asyncio.sleep(0.02)
    assert snapshot_row(tmp_path, "victim")[0] > old[0]
    shutil.rmtree(tmp_path / "runtime")
    set_snapshot(
        tmp_path,
        "victim",
        **dict(zip(("generation", "key_id", "wrapped_key", "ciphertext"), old, strict=True)),
    )
    async with gateway(tmp_path) as (_, client):
        failed = await client.wait_state("victim", S.INSTANCE_STATE_ERROR)
        assert failed.state_reason == R.STATE_REASON_SESSION_UNDECRYPTABLE
        assert "generation" in failed.state_detail
    assert snapshot_row(tmp_path, "victim") == old


async def test_a_wrong_master_key_fails_every_session_and_deletes_nothing(tmp_path: Path) -> None:
    await paired_then_stopped(tmp_path, ["a", "b"])
    before = [snapshot_row(tmp_path, i) for i in ("a", "b")]
    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text(base64.b64encode(os.urandom(32)).decode())
    async with gateway(tmp_path, master_key_file=wrong_key) as (_, client):
        for instance_id in ("a", "b"):
            failed = await client.wait_state(instance_id, S.INSTANCE_STATE_ERROR)
            assert failed.state_reason == R.STATE_REASON_SESSION_UNDECRYPTABLE
            assert "not configured" in failed.state_detail
    assert [snapshot_row(tmp_path, i) for i in ("a", "b")] == before
    async with gateway(tmp_path) as (_, client):  # the right key: everything is back
        for instance_id in ("a", "b"):
            await client.wait_state(instance_id, S.INSTANCE_STATE_CONNECTED)


async def test_a_wrong_master_key_never_reseals_a_surviving_runtime_store(tmp_path: Path) -> None:
    # No reboot this time: the plaintext stores are still in the runtime dir. A start with a
    # wrong key must not snapshot them under that key (which would lose every session).
    async with gateway(tmp_path) as (_, client):
        for n, instance_id in enumerate(("a", "b")):
            await client.create(instance_id)
            await client.pair(instance_id, f"+55119444410{n:02d}")
    before = [snapshot_row(tmp_path, i) for i in ("a", "b")]
    stores = {path: path.read_bytes() for path in (tmp_path / "runtime").rglob("session.db")}
    assert len(stores) == 2
    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text(base64.b64encode(os.urandom(32)).decode())
    async with gateway(tmp_path, master_key_file=wrong_key) as (_, client):
        for instance_id in ("a", "b"):
            failed = await client.wait_state(instance_id, S.INSTANCE_STATE_ERROR)
            assert failed.state_reason == R.STATE_REASON_SESSION_UNDECRYPTABLE
            assert "does not open with the configured master keys" in failed.state_detail
    # the shutdown snapshot did not replace them either
    assert [snapshot_row(tmp_path, i) for i in ("a", "b")] == before
    assert {path: path.read_bytes() for path in stores} == stores  # the stores left alone
    async with gateway(tmp_path) as (_, client):  # the right key: back without a QR
        for instance_id in ("a", "b"):
            back = await client.wait_state(instance_id, S.INSTANCE_STATE_CONNECTED)
            assert back.state_reason == R.STATE_REASON_CONNECTED


# ---- file modes ---------------------------------------------------------------------------


def open_to_others(root: Path) -> list[str]:
    return [
        f"{path} {stat.S_IMODE(path.lstat().st_mode):04o}"
        for path in [root, *root.rglob("*")]
        if stat.S_IMODE(path.lstat().st_mode) & 0o077
    ]


async def test_every_file_a_started_gateway_creates_is_private(tmp_path: Path) -> None:
    data_dir, runtime_dir = tmp_path / "data", tmp_path / "runtime"
    server = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        key = await make_key(data_dir, "acme")
        async with server_client(server, key) as client:
            messenger = Messenger(client)
            await messenger.ready("modes", "+5511944442000")
            sent = await messenger.send_text("modes", "+5511960000001", "hi")
            await messenger.wait_message("modes", sent.id, lambda m: m.whatsapp_message_id != "")
        await wait_snapshotted(data_dir, 1)
        stores = {path.name for path in runtime_dir.rglob("*.db")}
        assert {"session.db", "sim-phone.db"} <= stores
        names = {path.name for path in data_dir.iterdir()}
        assert {"zapgate.db", "zapgate.db-wal", "zapgate.db-shm", "master.key"} <= names
        assert (runtime_dir / "instances" / "acme" / "modes").is_dir()
        assert open_to_others(data_dir) == []
        assert open_to_others(runtime_dir) == []
    finally:
        server.close()


async def test_an_open_data_dir_is_warned_about(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    old_db = data_dir / "zapgate.db"  # left 0644 by an older version
    sqlite3.connect(old_db).close()
    old_db.chmod(0o644)
    server = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        # logged before the server listens: ServerProcess has read it already
        [warning] = [line for line in server.log if "IS READABLE BY OTHER USERS" in line]
        assert "WARNING" in warning
        assert f"DATA DIR {data_dir}" in warning
        assert f"chmod 700 {data_dir}" in warning
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o755  # the operator's to change
        assert stat.S_IMODE(old_db.stat().st_mode) == 0o600
    finally:
        server.close()
