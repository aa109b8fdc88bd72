"""`zapgate simulated-whatsapp`: runs the simulated WhatsApp server (sessions/simwa_server.py)
that gateways started with `--engine sim --sim-server HOST:PORT` attach their simulators to."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from zapgate.gateway.ops.file_modes import restrict_umask
from zapgate.sessions.runloop import run_async
from zapgate.sessions.simwa_server import serve


def add_commands(commands: Any) -> None:
    server = commands.add_parser(
        "simulated-whatsapp",
        help="run a simulated WhatsApp that every node's simulator engine attaches to",
    )
    server.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="host:port (default %(default)s: a free port, logged at start)",
    )
    server.add_argument(
        "--data", type=Path, required=True, help="directory for the phones and the record"
    )
    server.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    server.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    restrict_umask()  # the phones' files are 0600 like the in-worker ones
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_async(serve(args.listen, args.data))
    return 0
