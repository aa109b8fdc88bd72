"""`zapgate vault rotate-key` (also killed half-way) and `zapgate sessions export|import`."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
from pathlib import Path

from tests.server_process import zapgate
from tests.sim_client import SimClient
from tests.test_sessions_at_rest import gateway
from zapgate.gateway.connections.master_key import read_key_file
from zapgate.sessions.vault import Keyring, SealedSession
from zapgate.v1 import instance_pb2 as pb

S = pb.InstanceState
R = pb.StateReason


async def pair(tmp_path: Path, ids: list[str]) -> dict[str, str]:
    jids = {}
    async with gateway(tmp_path) as (_, client):
        for n, instance_id in enumerate(ids):
            await client.create(instance_id)
            jids[instance_id] = (
                await client.pair(instance_id, f"+55119333300{n:02d}")
            ).instance.jid
    shutil.rmtree(tmp_path / "runtime")  # reboot: what follows comes from the snapshots
    return jids


def sealed_rows(data_dir: Path) -> dict[str, SealedSession]:
    with sqlite3.connect(data_dir / "zapgate.db") as db:
        rows = db.execute(
            "SELECT tenant, id, generation, key_id, wrapped_key, ciphertext FROM session_snapshots"
        ).fetchall()
    return {f"{r[0]}/{r[1]}": SealedSession(r[2], r[3], bytes(r[4]), bytes(r[5])) for r in rows}


async def assert_connected(tmp_path: Path, jids: dict[str, str]) -> None:
    async with gateway(tmp_path) as (_, client):
        await assert_connected_with(client, jids)
    shutil.rmtree(tmp_path / "runtime")


async def assert_connected_with(client: SimClient, jids: dict[str, str]) -> None:
    for instance_id, jid in jids.items():
        back = await client.wait_state(instance_id, S.INSTANCE_STATE_CONNECTED)
        assert (back.jid, back.state_reason) == (jid, R.STATE_REASON_CONNECTED)


async def test_rotation_rewraps_every_session(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    jids = await pair(tmp_path, ["a", "b", "c"])
    old = read_key_file(data_dir / "master.key")
    result = zapgate("vault", "rotate-key", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("re-wrapped") == 3
    new = read_key_file(data_dir / "master.key")
    assert new.key_id != old.key_id
    assert read_key_file(data_dir / "master.key.previous") == old
    assert not (data_dir / "master.key.next").exists()
    assert {s.key_id for s in sealed_rows(data_dir).values()} == {new.key_id}
    (data_dir / "master.key.previous").unlink()  # the old key is no longer needed
    await assert_connected(tmp_path, jids)


async def test_a_rotation_killed_half_way_leaves_every_session_readable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    jids = await pair(tmp_path, ["a", "b", "c", "d"])
    before = sealed_rows(data_dir)
    old = read_key_file(data_dir / "master.key")
    rotation = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zapgate.gateway.cli",
        "vault",
        "rotate-key",
        "--data-dir",
        str(data_dir),
        "--pause-seconds",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert rotation.stdout is not None
    line = await asyncio.wait_for(rotation.stdout.readline(), 60)
    assert b"re-wrapped 1/4" in line
    rotation.kill()
    await rotation.wait()

    new = read_key_file(data_dir / "master.key.next")
    rows = sealed_rows(data_dir)
    assert sorted(s.key_id == new.key_id for s in rows.values()) == [False, False, False, True]
    for owner, sealed in rows.items():  # readable with the old or the new key
        image = Keyring(new, [old]).open(owner, sealed)
        assert image == Keyring(old).open(owner, before[owner])
    await assert_connected(tmp_path, jids)  # the server reads master.key and master.key.next

    resumed = zapgate("vault", "rotate-key", "--data-dir", str(data_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert {s.key_id for s in sealed_rows(data_dir).values()} == {new.key_id}
    assert read_key_file(data_dir / "master.key") == new
    await assert_connected(tmp_path, jids)


async def test_export_then_import_on_another_host(tmp_path: Path) -> None:
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    host_a.mkdir()
    host_b.mkdir()
    jids = await pair(host_a, ["mover"])
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple\n")
    exported = tmp_path / "mover.zapgate"
    result = zapgate(
        "sessions",
        "export",
        "mover",
        "--tenant",
        "acme",
        "--out",
        str(exported),
        "--data-dir",
        str(host_a / "data"),
        "--passphrase-file",
        str(passphrase),
    )
    assert result.returncode == 0, result.stderr
    assert exported.stat().st_mode & 0o077 == 0

    wrong = tmp_path / "wrong"
    wrong.write_text("not it")
    refused = zapgate(
        "sessions",
        "import",
        str(exported),
        "--data-dir",
        str(host_b / "data"),
        "--passphrase-file",
        str(wrong),
    )
    assert refused.returncode == 1
    assert "wrong passphrase" in refused.stderr

    imported = zapgate(
        "sessions",
        "import",
        str(exported),
        "--data-dir",
        str(host_b / "data"),
        "--passphrase-file",
        str(passphrase),
    )
    assert imported.returncode == 0, imported.stderr
    assert read_key_file(host_b / "data" / "master.key") != read_key_file(
        host_a / "data" / "master.key"
    )
    await assert_connected(host_b, jids)
