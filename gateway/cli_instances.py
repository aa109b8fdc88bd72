"""`zapgate instances create|list|get|delete`: call a running server over gRPC."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format
from google.protobuf.message import Message

from zapgate.v1 import instance_pb2, instance_pb2_grpc

Stub = instance_pb2_grpc.InstanceServiceStub


def add_commands(commands: Any) -> None:
    instances = commands.add_parser("instances", help="manage instances on a running server")
    actions = instances.add_subparsers(title="instances")
    create = actions.add_parser("create", help="create an instance")
    create.add_argument("instance_id", nargs="?", default="", help="id (generated if omitted)")
    create.add_argument("--name", default="", help="display name")
    create.add_argument("--phone", default="", help="E.164 phone number")
    create.add_argument("--label", action="append", default=[], help="key=value (repeatable)")
    listing = actions.add_parser("list", help="list instances (all pages)")
    listing.add_argument("--state", help="only this state, e.g. CONNECTED")
    get = actions.add_parser("get", help="show one instance")
    get.add_argument("instance_id")
    delete = actions.add_parser("delete", help="delete an instance")
    delete.add_argument("instance_id")
    for parser, action in ((create, _create), (listing, _list), (get, _get), (delete, _delete)):
        _add_client_flags(parser)
        parser.set_defaults(run=lambda args, action=action: _call(args, action))


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", default=os.environ.get("ZAPGATE_SERVER", "127.0.0.1:50051"),
        help="host:port of the server (default $ZAPGATE_SERVER or %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("ZAPGATE_API_KEY"),
        help="API key (default $ZAPGATE_API_KEY)",
    )
    parser.add_argument("--tls-ca", type=Path, help="PEM CA to verify a TLS server with")


def _call(args: argparse.Namespace, action: Callable[[Stub, Any], Awaitable[None]]) -> int:
    from zapgate.gateway.cli import run_async

    if not args.api_key:
        print("zapgate: give --api-key or set ZAPGATE_API_KEY", file=sys.stderr)
        return 2

    async def go() -> int:
        metadata = (("authorization", f"Bearer {args.api_key}"),)
        if args.tls_ca:
            credentials = grpc.ssl_channel_credentials(args.tls_ca.read_bytes())
            channel = grpc.aio.secure_channel(args.server, credentials)
        else:
            channel = grpc.aio.insecure_channel(args.server)
        async with channel:
            try:
                await action(_AuthedStub(Stub(channel), metadata), args)
            except grpc.aio.AioRpcError as error:
                print(f"zapgate: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1
        return 0

    return run_async(go())


class _AuthedStub:
    """Adds the API key metadata to every call of the wrapped stub."""

    def __init__(self, stub: Stub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        return lambda request: method(request, metadata=self._metadata)


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, indent=2))


async def _create(stub: Any, args: argparse.Namespace) -> None:
    labels = dict(item.partition("=")[::2] for item in args.label)
    request = instance_pb2.CreateInstanceRequest(
        instance_id=args.instance_id, display_name=args.name, phone=args.phone, labels=labels
    )
    _print((await stub.CreateInstance(request)).instance)


async def _list(stub: Any, args: argparse.Namespace) -> None:
    state = instance_pb2.InstanceState.Value(f"INSTANCE_STATE_{args.state.upper()}") if (
        args.state
    ) else 0
    token = ""
    while True:
        page = await stub.ListInstances(
            instance_pb2.ListInstancesRequest(page_token=token, state=state)
        )
        for instance in page.instances:
            print(json_format.MessageToJson(instance, indent=None))
        token = page.next_page_token
        if not token:
            return


async def _get(stub: Any, args: argparse.Namespace) -> None:
    _print((await stub.GetInstance(instance_pb2.GetInstanceRequest(instance_id=args.instance_id))).instance)


async def _delete(stub: Any, args: argparse.Namespace) -> None:
    await stub.DeleteInstance(instance_pb2.DeleteInstanceRequest(instance_id=args.instance_id))
    print(f"deleted {args.instance_id}")
