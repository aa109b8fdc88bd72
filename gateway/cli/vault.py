"""`zapgate vault rotate-key` and `zapgate sessions export|import`: run against the state
store directly (like `keys`), not through a running server."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.cli.keys import add_store_flags, open_cli_store
from zapgate.gateway.config import data_dir_from_env
from zapgate.gateway.connections.master_key import (
    NEXT_SUFFIX,
    PREVIOUS_SUFFIX,
    MasterKeyError,
    load_keyring,
    read_key_file,
    resolve_key_file,
    write_key_file,
)
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.snapshots import SnapshotRepository
from zapgate.gateway.store.webhooks import WebhookRepository
from zapgate.gateway.webhooks.signing_secret import rewrap_secret
from zapgate.sessions.export_file import ExportFileError, open_export, seal_export
from zapgate.sessions.runloop import run_async
from zapgate.sessions.vault import Keyring, MasterKey, Undecryptable, seal
from zapgate.v1 import instance_pb2

PASSPHRASE_ENV = "ZAPGATE_EXPORT_PASSPHRASE"  # noqa: S105 (a variable name)
Action = Callable[[AsyncEngine, argparse.Namespace], Awaitable[int]]


def add_commands(commands: Any) -> None:
    vault = commands.add_parser("vault", help="session encryption keys").add_subparsers()
    rotate = vault.add_parser(
        "rotate-key", help="re-wrap every session and webhook secret under a new master key"
    )
    rotate.add_argument(
        "--new-key-file",
        type=Path,
        help="the new key (base64); generated when the key lives in a file",
    )
    rotate.add_argument(
        "--pause-seconds",
        type=float,
        default=0.0,
        help="pause between sessions, to spare a busy database",
    )
    sessions = commands.add_parser("sessions", help="move sessions between hosts").add_subparsers()
    export = sessions.add_parser("export", help="write one instance's session to a file")
    export.add_argument("instance_id")
    export.add_argument("--tenant", required=True)
    export.add_argument("--out", type=Path, required=True)
    importer = sessions.add_parser("import", help="create an instance from an export file")
    importer.add_argument("file", type=Path)
    importer.add_argument("--tenant", help="import into this tenant (default: the exported one)")
    for parser, action in ((rotate, _rotate), (export, _export), (importer, _import)):
        add_store_flags(parser)
        parser.add_argument("--master-key-file", type=Path, help="default: as `serve`")
        parser.set_defaults(run=lambda args, action=action: _with_store(args, action))
    for parser in (export, importer):
        parser.add_argument(
            "--passphrase-file",
            type=Path,
            help=f"file with the passphrase (else ${PASSPHRASE_ENV}, else asked)",
        )


def _with_store(args: argparse.Namespace, action: Action) -> int:
    async def go() -> int:
        engine = await open_cli_store(args)
        try:
            return await action(engine, args)
        except (MasterKeyError, ExportFileError, Undecryptable) as error:
            print(f"zapgate: {error}", file=sys.stderr)
            return 1
        finally:
            await engine.dispose()

    return run_async(go())


def _data_dir(args: argparse.Namespace) -> Path:
    return data_dir_from_env(args.data_dir)


def _keyring(args: argparse.Namespace) -> Keyring:
    return load_keyring(_data_dir(args), args.master_key_file)


async def _rotate(engine: AsyncEngine, args: argparse.Namespace) -> int:
    old = _keyring(args)
    key_file = resolve_key_file(_data_dir(args), args.master_key_file)
    new_key = _new_key(key_file, args.new_key_file)
    ring = Keyring(new_key, [old.current])
    snapshots = SnapshotRepository(engine)
    pending = [(t, i) async for t, i, key_id in snapshots.all_keys() if key_id != new_key.key_id]
    for done, (tenant, instance_id) in enumerate(pending, start=1):
        sealed = await snapshots.latest(tenant, instance_id)
        if sealed is not None and sealed.key_id != new_key.key_id:
            rewrapped = ring.rewrap(f"{tenant}/{instance_id}", sealed)
            await snapshots.replace_wrapping(tenant, instance_id, rewrapped)
        print(f"re-wrapped {done}/{len(pending)}: {tenant}/{instance_id}", flush=True)
        await asyncio.sleep(args.pause_seconds)
    await _rotate_webhook_secrets(engine, ring, args.pause_seconds)
    if key_file is not None:
        _install(key_file)
        print(
            f"the new key is in {key_file}; the old one stays in {key_file}{PREVIOUS_SUFFIX} "
            "for older backups"
        )
    else:
        print("all sessions use the new key: set ZAPGATE_MASTER_KEY to it and restart")
    return 0


async def _rotate_webhook_secrets(engine: AsyncEngine, ring: Keyring, pause: float) -> None:
    """Webhook signing secrets are sealed like sessions: re-wrapped too, so dropping the old
    master key never leaves a webhook unable to sign."""
    repository = WebhookRepository(engine)
    current = ring.current.key_id
    pending = [(t, i) for t, i, key_id in await repository.secret_keys() if key_id != current]
    for done, (tenant, webhook_id) in enumerate(pending, start=1):
        record = await repository.get(tenant, webhook_id)
        if record is not None and record.secret.key_id != current:
            rewrapped = rewrap_secret(ring, tenant, webhook_id, record.secret)
            await repository.replace_secret_wrapping(tenant, webhook_id, rewrapped)
        print(f"re-wrapped webhook secret {done}/{len(pending)}: {tenant}/{webhook_id}", flush=True)
        await asyncio.sleep(pause)


def _new_key(key_file: Path | None, given: Path | None) -> MasterKey:
    """The key to rotate to. With a key file it is first saved as `<file>.next`, so a
    rotation killed at any point can be resumed, and the server can read both keys."""
    if key_file is None:
        if given is None:
            raise MasterKeyError("the key comes from the environment: give --new-key-file")
        return read_key_file(given)
    pending = Path(f"{key_file}{NEXT_SUFFIX}")
    if pending.exists():
        return read_key_file(pending)  # resume an interrupted rotation
    key = read_key_file(given) if given else MasterKey.generate()
    write_key_file(pending, key)
    return key


def _install(key_file: Path) -> None:
    """Old key to `.previous`, `.next` to the key file; the key file always exists."""
    previous = Path(f"{key_file}{PREVIOUS_SUFFIX}")
    staging = Path(f"{previous}.tmp")
    shutil.copyfile(key_file, staging)
    os.chmod(staging, 0o600)
    staging.replace(previous)
    Path(f"{key_file}{NEXT_SUFFIX}").replace(key_file)


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    if args.passphrase_file:
        return str(args.passphrase_file.read_text().rstrip("\n"))
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    passphrase = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("again: ") != passphrase:
        raise ExportFileError("the passphrases differ")
    return passphrase


async def _export(engine: AsyncEngine, args: argparse.Namespace) -> int:
    record = await InstanceRepository(engine).get(args.tenant, args.instance_id)
    sealed = await SnapshotRepository(engine).latest(args.tenant, args.instance_id)
    if record is None or sealed is None:
        print(f"zapgate: no session for {args.tenant}/{args.instance_id}", file=sys.stderr)
        return 1
    image = _keyring(args).open(record.key, sealed)
    meta = {
        "tenant": record.tenant,
        "instance_id": record.id,
        "display_name": record.display_name,
        "phone": record.phone,
        "jid": record.jid,
        "labels": dict(record.labels),
    }
    data = seal_export(image, meta, _passphrase(args, confirm=True))
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    print(f"exported {record.key} to {args.out}")
    return 0


async def _import(engine: AsyncEngine, args: argparse.Namespace) -> int:
    meta, image = open_export(args.file.read_bytes(), _passphrase(args, confirm=False))
    tenant = args.tenant or meta["tenant"]
    instances = InstanceRepository(engine)
    record = InstanceRecord(
        tenant=tenant,
        id=meta["instance_id"],
        display_name=meta["display_name"],
        phone=meta["phone"],
        state=instance_pb2.INSTANCE_STATE_DISCONNECTED,
        labels=meta.get("labels", {}),
    )
    if await instances.get(tenant, record.id) is not None:
        print(f"zapgate: {tenant}/{record.id} exists; delete it first", file=sys.stderr)
        return 1
    await instances.create(record)
    sealed = seal(_keyring_for_import(args).current, record.key, 1, image)
    await SnapshotRepository(engine).save(tenant, record.id, sealed)
    await instances.update(tenant, record.id, {"jid": meta["jid"], "want_connected": True})
    print(f"imported {record.key}; it connects on the next start of the server or on Connect")
    return 0


def _keyring_for_import(args: argparse.Namespace) -> Keyring:
    """Like the server: on the embedded default the key file may not exist yet."""
    return load_keyring(_data_dir(args), args.master_key_file, create=True)
