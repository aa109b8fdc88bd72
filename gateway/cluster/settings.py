"""Settings of a node in cluster mode (`zapgate serve --cluster`)."""

from __future__ import annotations

import dataclasses
import secrets
import socket
from dataclasses import dataclass

DEFAULT_LEASE_TTL_SECONDS = 15.0
DEFAULT_MAX_INSTANCES = 1000
# One renewal names every held lease in one statement (two bind parameters each, under
# PostgreSQL's 32,767): a node holds at most this many.
MAX_INSTANCES_LIMIT = 10_000
# A cluster secret shorter than this is refused at start.
MIN_SECRET_CHARS = 16
# Instances a node hands over at a time (a node joined, or this one drains): each batch
# per look (every TTL/3), so a join never makes a reconnect storm.
DEFAULT_HANDOVER_BATCH = 10


@dataclass(frozen=True)
class ClusterSettings:
    node_id: str
    # host:port other nodes and clients reach this node at ("" = its listen address).
    address: str = ""
    lease_ttl_seconds: float = DEFAULT_LEASE_TTL_SECONDS
    max_instances: int = DEFAULT_MAX_INSTANCES
    # Shared by every node: signs the calls one node forwards to another (node_proof.py).
    secret: str = dataclasses.field(default="", repr=False)
    handover_batch: int = DEFAULT_HANDOVER_BATCH

    @property
    def renew_seconds(self) -> float:
        """Leases are renewed three times per TTL: one late renewal loses nothing."""
        return self.lease_ttl_seconds / 3

    @property
    def takeover_seconds(self) -> float:
        """How often a node looks for instances nobody holds."""
        return self.lease_ttl_seconds / 3

    @property
    def worker_silence_seconds(self) -> float:
        """A worker whose core has not pinged it for this long stops its connections
        (sessions/core_watch.py). A paused core renewed at most TTL/3 before it stopped, so
        its leases last at least 2/3 TTL more: the connections are gone before that."""
        return self.lease_ttl_seconds / 2

    @property
    def worker_ping_seconds(self) -> float:
        """How often the core pings its workers: several pings per silence period, so one
        late ping is no silence."""
        return self.lease_ttl_seconds / 6

    @property
    def stalled_transaction_seconds(self) -> float:
        """A transaction left waiting this long by its node is ended by PostgreSQL: within
        half a TTL, so the other nodes' renewals never wait a whole TTL behind its locks."""
        return self.lease_ttl_seconds / 2


def generated_node_id() -> str:
    """Unique per start: a restarted node is a new node (its old leases expire)."""
    host = socket.gethostname().split(".")[0][:40] or "node"
    return f"{host}-{secrets.token_hex(4)}"
