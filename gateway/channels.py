"""Client channels for the CLI's commands that talk to a running server."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio


def open_channel(server: str, tls_ca: Path | None) -> grpc.aio.Channel:
    """A plaintext channel, or a TLS one that trusts `tls_ca` when given."""
    if tls_ca is None:
        return grpc.aio.insecure_channel(server)
    return grpc.aio.secure_channel(server, grpc.ssl_channel_credentials(tls_ca.read_bytes()))
