"""`zapgate instances create|list|get|delete|connect|reconnect`: call a running server through the
Python client (clients/python)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc.aio
import qrcode
from google.protobuf import json_format
from google.protobuf.message import Message

from zapgate.sessions.runloop import run_async
from zapgate_client import Client, Tls
from zapgate_client.v1 import instance_pb2

STATE_NAMES = [
    name.removeprefix("INSTANCE_STATE_").lower()
    for name in instance_pb2.InstanceState.keys()  # noqa: SIM118 (not a dict)
    if name != "INSTANCE_STATE_UNSPECIFIED"
]
Action = Callable[[Client, argparse.Namespace], Awaitable[None]]


def add_commands(commands: Any) -> None:
    instances = commands.add_parser("instances", help="manage instances on a running server")
    actions = instances.add_subparsers(title="instances")
    create = actions.add_parser("create", help="create an instance")
    create.add_argument("instance_id", nargs="?", default="", help="id (generated if omitted)")
    create.add_argument("--name", default="", help="display name")
    create.add_argument("--phone", default="", help="E.164 phone number")
    create.add_argument("--label", action="append", default=[], help="key=value (repeatable)")
    listing = actions.add_parser("list", help="list instances (all pages)")
    listing.add_argument(
        "--state", type=str.lower, choices=STATE_NAMES, help="only instances in this state"
    )
    get = actions.add_parser("get", help="show one instance")
    get.add_argument("instance_id")
    delete = actions.add_parser("delete", help="delete an instance")
    delete.add_argument("instance_id")
    connect = actions.add_parser(
        "connect", help="connect: show the QR code (or pair code) here, wait until connected"
    )
    connect.add_argument("instance_id")
    connect.add_argument("--phone", default="", help="E.164 number: also show a pair code")
    reconnect = actions.add_parser(
        "reconnect", help="drop a paired instance's connection and redial it (no QR)"
    )
    reconnect.add_argument("instance_id")
    commands_and_actions = (
        (create, _create),
        (listing, _list),
        (get, _get),
        (delete, _delete),
        (connect, _connect),
        (reconnect, _reconnect),
    )
    for parser, action in commands_and_actions:
        _add_client_flags(parser)
        parser.set_defaults(run=lambda args, action=action: _call(args, action))


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("ZAPGATE_SERVER", "127.0.0.1:50051"),
        help="host:port of the server (default $ZAPGATE_SERVER or %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ZAPGATE_API_KEY"),
        help="API key (default $ZAPGATE_API_KEY)",
    )
    parser.add_argument("--tls-ca", type=Path, help="PEM CA to verify a TLS server with")


def client_for(args: argparse.Namespace, api_key: str | None = None) -> Client:
    """A client of `--server`, over TLS when `--tls-ca` is given."""
    tls = Tls.from_files(args.tls_ca) if args.tls_ca else False
    return Client(args.server, api_key, tls=tls)


def _call(args: argparse.Namespace, action: Action) -> int:
    if not args.api_key:
        print("zapgate: give --api-key or set ZAPGATE_API_KEY", file=sys.stderr)
        return 2

    async def go() -> int:
        async with client_for(args, args.api_key) as client:
            try:
                await action(client, args)
            except grpc.aio.AioRpcError as error:
                print(f"zapgate: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1
        return 0

    return run_async(go())


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, indent=2))


async def _create(client: Client, args: argparse.Namespace) -> None:
    labels = dict(item.partition("=")[::2] for item in args.label)
    request = instance_pb2.CreateInstanceRequest(
        instance_id=args.instance_id, display_name=args.name, phone=args.phone, labels=labels
    )
    _print((await client.instances.CreateInstance(request)).instance)


async def _list(client: Client, args: argparse.Namespace) -> None:
    state = instance_pb2.INSTANCE_STATE_UNSPECIFIED
    if args.state:
        state = instance_pb2.InstanceState.Value(f"INSTANCE_STATE_{args.state.upper()}")
    async for instance in client.list_instances(state):
        print(json_format.MessageToJson(instance, indent=None))


async def _get(client: Client, args: argparse.Namespace) -> None:
    request = instance_pb2.GetInstanceRequest(instance_id=args.instance_id)
    _print((await client.instances.GetInstance(request)).instance)


async def _delete(client: Client, args: argparse.Namespace) -> None:
    request = instance_pb2.DeleteInstanceRequest(instance_id=args.instance_id)
    await client.instances.DeleteInstance(request)
    print(f"deleted {args.instance_id}")


async def _reconnect(client: Client, args: argparse.Namespace) -> None:
    request = instance_pb2.ReconnectRequest(instance_id=args.instance_id)
    _print((await client.instances.Reconnect(request)).instance)


async def _connect(client: Client, args: argparse.Namespace) -> None:
    async for update in client.connect(args.instance_id, args.phone):
        kind = update.WhichOneof("update")
        if kind == "qr_code":
            print(f"Scan with WhatsApp > Linked devices (code {update.qr_code.index + 1} of 6):")
            qr = qrcode.QRCode(border=1)
            qr.add_data(update.qr_code.code)
            qr.print_ascii(out=sys.stdout, invert=True)
        elif kind == "pair_code":
            print(f"Or enter this code on the phone: {update.pair_code.code}")
        elif kind == "state_change":
            change = update.state_change
            state = instance_pb2.InstanceState.Name(change.state).removeprefix("INSTANCE_STATE_")
            print(f"state: {state.lower()} {change.detail}".rstrip())
        elif kind == "result":
            outcome = instance_pb2.ConnectOutcome.Name(update.result.outcome)
            print(outcome.removeprefix("CONNECT_OUTCOME_").lower())
            _print(update.result.instance)
            if update.result.outcome != instance_pb2.CONNECT_OUTCOME_CONNECTED:
                raise SystemExit(1)
