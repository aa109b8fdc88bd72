"""`zapgate` command line: serve, manage API keys, and talk to a running server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from zapgate.gateway import cli_health, cli_instances, cli_keys
from zapgate.gateway.config import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LISTEN,
    ServeConfig,
    TlsConfig,
    data_dir_from_env,
    database_url_from_env,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zapgate", description="Self-hosted WhatsApp gateway")
    commands = parser.add_subparsers(title="commands")
    serve = commands.add_parser("serve", help="run the gRPC server")
    cli_keys.add_store_flags(serve)
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="host:port (default %(default)s)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate; enables TLS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", type=Path, help="require client certs signed by this CA")
    serve.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="seconds in-flight calls get to finish on SIGTERM (default %(default)s)",
    )
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    serve.set_defaults(run=run_serve)
    cli_keys.add_commands(commands)
    cli_instances.add_commands(commands)
    cli_health.add_commands(commands)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from zapgate.gateway.server import serve

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
    tls = TlsConfig(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    config = ServeConfig(
        listen=args.listen,
        data_dir=data_dir_from_env(args.data_dir),
        database_url=database_url_from_env(args.database_url),
        tls=tls,
        grace_seconds=args.grace,
    )
    run_async(serve(config))
    return 0


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Runs on uvloop where it is installed (Linux, macOS), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    sys.exit(main())
