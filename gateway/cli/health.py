"""`zapgate health`: asks a server's standard gRPC health service; exit 0 when SERVING.
Used by the container's HEALTHCHECK, so it needs no API key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc.aio

from zapgate.gateway.cli.instances import client_for
from zapgate.sessions.runloop import run_async


def add_commands(commands: Any) -> None:
    health = commands.add_parser("health", help="exit 0 if the server reports SERVING")
    health.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    health.add_argument("--tls-ca", type=Path, help="PEM CA to verify a TLS server with")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds")
    health.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    return run_async(_check(args))


async def _check(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        try:
            status = await client.health(timeout=args.timeout)
        except grpc.aio.AioRpcError as error:
            print(f"zapgate: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(status)
    return 0 if status == "SERVING" else 1
