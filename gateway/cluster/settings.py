"""Settings of a node in cluster mode (`zapgate serve --cluster`)."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass

DEFAULT_LEASE_TTL_SECONDS = 15.0
DEFAULT_MAX_INSTANCES = 1000
# One renewal names every held lease in one statement (two bind parameters each, under
# PostgreSQL's 32,767): a node holds at most this many.
MAX_INSTANCES_LIMIT = 10_000


@dataclass(frozen=True)
class ClusterSettings:
    node_id: str
    # host:port other nodes and clients reach this node at ("" = its listen address).
    address: str = ""
    lease_ttl_seconds: float = DEFAULT_LEASE_TTL_SECONDS
    max_instances: int = DEFAULT_MAX_INSTANCES

    @property
    def renew_seconds(self) -> float:
        """Leases are renewed three times per TTL: one late renewal loses nothing."""
        return self.lease_ttl_seconds / 3

    @property
    def takeover_seconds(self) -> float:
        """How often a node looks for instances nobody holds."""
        return self.lease_ttl_seconds / 3

    @property
    def stalled_transaction_seconds(self) -> float:
        """A transaction left waiting this long by its node is ended by PostgreSQL: within
        half a TTL, so the other nodes' renewals never wait a whole TTL behind its locks."""
        return self.lease_ttl_seconds / 2


def generated_node_id() -> str:
    """Unique per start: a restarted node is a new node (its old leases expire)."""
    host = socket.gethostname().split(".")[0][:40] or "node"
    return f"{host}-{secrets.token_hex(4)}"
