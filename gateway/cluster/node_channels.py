"""gRPC channels to the other nodes, one per address (from the `nodes` table), reused by
every forwarded call and closed when the node stops. With TLS a node verifies the others'
certificates against `--tls-client-ca` when given (else the system's roots) and presents
its own certificate, which a node requiring client certificates asks for."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import grpc
import grpc.aio

from zapgate.gateway.config import TlsConfig
from zapgate.sessions.engine import GRPC_MESSAGE_OPTIONS

# Addresses of nodes long gone are closed first once this many are open.
MAX_CHANNELS = 64


class NodeChannels:
    def __init__(self, tls: TlsConfig | None) -> None:
        self._tls = tls
        self._channels: OrderedDict[str, grpc.aio.Channel] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def to(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is not None:
            self._channels.move_to_end(address)
            return channel
        channel = self._open(address)
        self._channels[address] = channel
        if len(self._channels) > MAX_CHANNELS:
            _, oldest = self._channels.popitem(last=False)
            task = asyncio.create_task(oldest.close(grace=5.0))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return channel

    def _open(self, address: str) -> grpc.aio.Channel:
        if self._tls is None:
            return grpc.aio.insecure_channel(address, options=GRPC_MESSAGE_OPTIONS)
        tls = self._tls
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.client_ca_file.read_bytes() if tls.client_ca_file else None,
            private_key=tls.key_file.read_bytes(),
            certificate_chain=tls.cert_file.read_bytes(),
        )
        return grpc.aio.secure_channel(address, credentials, options=GRPC_MESSAGE_OPTIONS)

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            await channel.close(grace=None)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
