"""The `zapgate` command line, run as real processes."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import pytest

from tests.server_process import ServerProcess, zapgate
from zapgate.gateway.rpc.roles import Caller, Role
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import instance_pb2_grpc, simulator_pb2_grpc, webhook_pb2_grpc
from zapgate.v1 import simulator_pb2 as spb
from zapgate.v1 import webhook_pb2 as wpb

KEY = re.compile(r"zg_[0-9a-f]{16}_[A-Za-z0-9-]{43}")


def test_keys_create_prints_only_the_key_then_list_and_revoke(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    created = zapgate("keys", "create", "--tenant", "acme", "--data-dir", data)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KEY.fullmatch(key), created.stdout
    assert created.stdout == key + "\n"
    key_id = key.split("_")[1]

    listed = zapgate("keys", "list", "--data-dir", data)
    assert listed.returncode == 0
    assert key_id in listed.stdout
    assert "acme" in listed.stdout
    assert key.split("_")[2] not in listed.stdout

    revoked = zapgate("keys", "revoke", key_id, "--data-dir", data)
    assert revoked.returncode == 0
    again = zapgate("keys", "revoke", key_id, "--data-dir", data)
    assert again.returncode == 1
    assert "no active key" in again.stderr


def test_keys_create_with_a_role_and_instances_and_list_shows_them(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    created = zapgate(
        "keys", "create", "--tenant", "acme", "--role", "sender",
        "--instance", "Shop", "--instance", "desk", "--data-dir", data,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KEY.fullmatch(key), created.stdout
    admin = zapgate("keys", "create", "--tenant", "acme", "--data-dir", data).stdout.strip()

    listed = zapgate("keys", "list", "--data-dir", data).stdout.splitlines()
    assert listed[0].split()[:4] == ["KEY", "ID", "TENANT", "ROLE"]
    rows = {line.split()[0]: line.split() for line in listed[1:]}
    scoped, unscoped = rows[key.split("_")[1]], rows[admin.split("_")[1]]
    assert (scoped[2], scoped[-1]) == ("sender", "desk,shop")  # lower case, sorted
    assert (unscoped[2], unscoped[-1]) == ("admin", "*")  # the default: the whole tenant

    caller = asyncio.run(authenticate(tmp_path / "data" / "zapgate.db", key))
    assert caller == Caller("acme", key.split("_")[1], Role.SENDER, ("desk", "shop"))


async def authenticate(database: Path, key: str) -> Caller | None:
    engine = await open_database(f"sqlite+aiosqlite:///{database}")
    try:
        return await ApiKeyRepository(engine).authenticate(key)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [(["--role", "owner"], "invalid choice"), (["--instance", "no spaces"], "--instance")],
)
def test_keys_create_rejects_a_bad_role_or_instance(
    tmp_path: Path, flags: list[str], complaint: str
) -> None:
    result = zapgate("keys", "create", "--tenant", "acme", *flags, "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert complaint in result.stderr


def test_keys_create_rejects_a_bad_tenant(tmp_path: Path) -> None:
    result = zapgate("keys", "create", "--tenant", "Bad Tenant", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "tenant" in result.stderr


def test_keys_use_the_data_dir_from_the_environment(tmp_path: Path) -> None:
    env = {"ZAPGATE_DATA_DIR": str(tmp_path / "env-data"), "PATH": "/usr/bin:/bin"}
    result = zapgate("keys", "create", "--tenant", "acme", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env-data" / "zapgate.db").exists()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    yield process
    process.close()


def test_instances_commands_against_a_running_server(server: ServerProcess, tmp_path: Path) -> None:
    key = zapgate("keys", "create", "--tenant", "ops", "--data-dir", str(tmp_path / "data"))
    client = ["--server", server.address, "--api-key", key.stdout.strip()]

    made = zapgate(
        "instances",
        "create",
        "sales",
        "--name",
        "Sales",
        "--phone",
        "+5511999998888",
        "--label",
        "team=br",
        *client,
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["labels"] == {"team": "br"}
    got = zapgate("instances", "get", "sales", *client)
    assert json.loads(got.stdout)["displayName"] == "Sales"
    listed = zapgate("instances", "list", "--state", "disconnected", *client)
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ["sales"]
    bad = zapgate("instances", "create", "x", "--phone", "123", *client)
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr
    assert "phone" in bad.stderr
    deleted = zapgate("instances", "delete", "sales", *client)
    assert deleted.returncode == 0
    missing = zapgate("instances", "get", "sales", *client)
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr


async def test_webhooks_list_shows_delivery_status(server: ServerProcess, tmp_path: Path) -> None:
    key = zapgate("keys", "create", "--tenant", "hooks", "--data-dir", str(tmp_path / "data"))
    client = ["--server", server.address, "--api-key", key.stdout.strip()]
    empty = await asyncio.to_thread(zapgate, "webhooks", "list", *client)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == ""
    async with grpc.aio.insecure_channel(server.address) as channel:
        made = await webhook_pb2_grpc.WebhookServiceStub(channel).CreateWebhook(
            wpb.CreateWebhookRequest(webhook=wpb.Webhook(url="https://example.com/hook")),
            metadata=(("authorization", f"Bearer {key.stdout.strip()}"),),
        )
    listed = await asyncio.to_thread(zapgate, "webhooks", "list", *client)
    [line] = listed.stdout.splitlines()
    shown = json.loads(line)
    assert shown["id"] == made.webhook.id
    assert shown["url"] == "https://example.com/hook"
    assert shown["status"] in ("ACTIVE", "RETRYING")


def test_instances_commands_need_a_key(server: ServerProcess) -> None:
    result = zapgate("instances", "list", "--server", server.address, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "ZAPGATE_API_KEY" in result.stderr


def test_health_command_reports_serving_and_fails_without_a_server(
    server: ServerProcess,
) -> None:
    serving = zapgate("health", "--server", server.address)
    assert serving.returncode == 0, serving.stderr
    assert serving.stdout.strip() == "SERVING"
    server.terminate()
    server.wait()
    down = zapgate("health", "--server", server.address, "--timeout", "2")
    assert down.returncode == 1
    assert "UNAVAILABLE" in down.stderr or "DEADLINE_EXCEEDED" in down.stderr


async def test_instances_connect_shows_the_qr_and_waits_until_connected(
    server: ServerProcess, tmp_path: Path
) -> None:
    key = zapgate("keys", "create", "--tenant", "ops", "--data-dir", str(tmp_path / "data"))
    api_key = key.stdout.strip()
    client = ["--server", server.address, "--api-key", api_key]
    assert zapgate("instances", "create", "phone1", *client).returncode == 0
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zapgate.gateway.cli",
        "instances",
        "connect",
        "phone1",
        *client,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert cli.stdout is not None
    shown = []
    while not shown or "Scan with WhatsApp" not in shown[-1]:
        shown.append((await asyncio.wait_for(cli.stdout.readline(), 60)).decode())
    async with grpc.aio.insecure_channel(server.address) as channel:
        metadata = (("authorization", f"Bearer {api_key}"),)
        watcher = instance_pb2_grpc.InstanceServiceStub(channel).Connect(
            pb.ConnectRequest(instance_id="phone1"), metadata=metadata
        )
        async for update in watcher:  # a second watcher sees the code the CLI shows
            if update.HasField("qr_code"):
                await simulator_pb2_grpc.SimulatorServiceStub(channel).ScanQr(
                    spb.ScanQrRequest(
                        instance_id="phone1", code=update.qr_code.code, phone="+5511977776666"
                    ),
                    metadata=metadata,
                )
    rest, stderr = await asyncio.wait_for(cli.communicate(), 60)
    stdout = "".join(shown).encode() + rest
    assert cli.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert "Scan with WhatsApp" in text
    assert "\u2588" in text or "\u2580" in text or "\u2584" in text  # the QR's block characters
    assert "\nconnected\n" in text
    assert '"phone": "+5511977776666"' in text

    redialed = zapgate("instances", "reconnect", "PHONE1", *client)
    assert redialed.returncode == 0, redialed.stderr
    instance = json.loads(redialed.stdout)
    assert (instance["id"], instance["stateReason"]) == (
        "phone1",
        "STATE_REASON_RECONNECT_REQUESTED",
    )
    assert zapgate("instances", "create", "unpaired", *client).returncode == 0
    refused = zapgate("instances", "reconnect", "unpaired", *client)
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr
