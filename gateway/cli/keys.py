"""`zapgate keys create|list|revoke`: manage API keys directly in the state store."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.config import ServeConfig, data_dir_from_env, database_url_from_env
from zapgate.gateway.rpc.errors import InvalidArgument
from zapgate.gateway.rpc.roles import Role
from zapgate.gateway.rpc.validation import (
    check_instance_id,
    check_tenant,
    normalize_instance_id,
    raise_if_any,
)
from zapgate.gateway.store.apikeys import ApiKeyInfo, ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.sessions.runloop import run_async


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="data directory (default $ZAPGATE_DATA_DIR or ./zapgate-data)"
    )
    parser.add_argument(
        "--database-url",
        help="state store URL, e.g. postgresql://user@host/db (default: SQLite in the data dir;"
        " also $ZAPGATE_DATABASE_URL)",
    )


def add_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(title="keys")
    create = keys.add_parser("create", help="create a key and print it (only the key)")
    create.add_argument("--tenant", required=True, help="tenant the key belongs to")
    create.add_argument("--description", default="", help="a note on who uses the key")
    create.add_argument(
        "--role",
        default="admin",
        choices=[role.label for role in Role],
        help="what the key may call (default admin; see docs/security.md)",
    )
    create.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="ID",
        help="an instance the key reaches (repeat for several; none: the whole tenant)",
    )
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id shown by `keys list`")
    for parser, action in ((create, _create), (listing, _list), (revoke, _revoke)):
        add_store_flags(parser)
        parser.set_defaults(run=lambda args, action=action: _with_store(args, action))


async def open_cli_store(args: argparse.Namespace) -> AsyncEngine:
    """The state store named by --data-dir / --database-url (as `serve` would open it)."""
    config = ServeConfig(
        data_dir=data_dir_from_env(args.data_dir),
        database_url=database_url_from_env(args.database_url),
    )
    if config.database_url is None:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return await open_database(config.resolved_database_url)


def _with_store(args: argparse.Namespace, action: Any) -> int:
    async def go() -> int:
        engine = await open_cli_store(args)
        try:
            return int(await action(ApiKeyRepository(engine), args))
        finally:
            await engine.dispose()

    return run_async(go())


async def _create(repo: ApiKeyRepository, args: argparse.Namespace) -> int:
    scope = [normalize_instance_id(i) for i in args.instance]
    try:
        check_tenant(args.tenant)
        raise_if_any([v for i in scope for v in check_instance_id("--instance", i)])
    except InvalidArgument as error:
        print(f"zapgate: {error.message}", file=sys.stderr)
        return 2
    key, _ = await repo.create(args.tenant, args.description, Role.parse(args.role), scope)
    print(key)
    return 0


async def _list(repo: ApiKeyRepository, args: argparse.Namespace) -> int:
    print(
        f"{'KEY ID':<17} {'TENANT':<20} {'ROLE':<9} {'CREATED':<20} {'REVOKED':<20} "
        f"{'INSTANCES':<24} DESCRIPTION"
    )
    for info in await repo.list(args.tenant):
        print(_row(info))
    return 0


async def _revoke(repo: ApiKeyRepository, args: argparse.Namespace) -> int:
    if not await repo.revoke(args.key_id):
        print(f"zapgate: no active key with id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def _row(info: ApiKeyInfo) -> str:
    revoked = _time(info.revoke_time_us) if info.revoke_time_us is not None else "-"
    scope = ",".join(info.scope) or "*"  # `*`: every instance of the tenant
    return (
        f"{info.key_id:<17} {info.tenant:<20} {info.role.label:<9} "
        f"{_time(info.create_time_us):<20} {revoked:<20} {scope:<24} {info.description}"
    )


def _time(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
