"""Async Python client for zapgate's gRPC API (see README.md).

    async with Client("127.0.0.1:50051", api_key) as zapgate:
        await zapgate.send_text("sales", "+5511988887777", "Hello!")

Messages and enums are in `zapgate_client.v1` (generated from proto/zapgate/v1).
"""

from zapgate_client.client import Client, Tls
from zapgate_client.retry import Retry

__all__ = ["Client", "Retry", "Tls"]
