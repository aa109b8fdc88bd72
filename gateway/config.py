"""Settings of `zapgate serve`, resolved once from flags and environment."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.gateway.connections.backoff import Backoff
from zapgate.gateway.connections.session_keeper import KeeperTimings
from zapgate.gateway.events.log import Retention
from zapgate.gateway.store.db import default_sqlite_url
from zapgate.gateway.webhooks.timings import WebhookSettings
from zapgate.ratelimit.health import PauseRules
from zapgate.sessions.sim_engine import SimTimings

DEFAULT_LISTEN = "127.0.0.1:50051"
# `zapgate serve`'s HTTP port (Connect, gRPC-Web; docs/http.md), on by default on loopback.
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"
DEFAULT_DATA_DIR = "./zapgate-data"
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_ENGINE_WORKERS = 2
ENGINES = ("neonize", "sim")
MEMORY_FS = Path("/dev/shm")  # noqa: S108 (a private 0700 directory per user inside)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # when set, clients must present a certificate


@dataclass(frozen=True)
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str | None = None
    tls: TlsConfig | None = None
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    engine: str = "neonize"
    engine_workers: int = DEFAULT_ENGINE_WORKERS
    # Plaintext session stores live here only; None picks a private tmpfs directory.
    runtime_dir: Path | None = None
    sim_timings: SimTimings = field(default_factory=SimTimings)
    # host:port of a simulated WhatsApp server (`zapgate simulated-whatsapp`) that every
    # simulator engine attaches to; None: each worker keeps the phone side itself.
    sim_server: str | None = None
    backoff: Backoff = field(default_factory=Backoff)
    worker_ping_seconds: float = 5.0
    # None: $ZAPGATE_MASTER_KEY, else <data dir>/master.key (generated on first start).
    master_key_file: Path | None = None
    previous_master_key_files: tuple[Path, ...] = ()
    keeper_timings: KeeperTimings = field(default_factory=KeeperTimings)
    event_retention: Retention = field(default_factory=Retention)
    # When sending pauses by itself: errors in a row, delivery rate (see ratelimit/health.py).
    pause_rules: PauseRules = field(default_factory=PauseRules)
    # Contacts are synced this long after each connect (whatsmeow receives the phone's
    # contacts through app-state sync shortly after connecting).
    contacts_sync_delay_seconds: float = 10.0
    # How long a number check's answer is reused instead of asking WhatsApp again.
    number_check_ttl_seconds: float = 7 * 86_400.0
    # host:port (or a port, on loopback) to serve Prometheus metrics on; None: off.
    metrics_listen: str | None = None
    # host:port (or a port, on loopback) of the HTTP port (Connect, gRPC-Web, gRPC over
    # HTTP/1.1 and h2c: gateway/http/); None: off. The CLI turns it on by default.
    http_listen: str | None = None
    # Origins whose pages may call the HTTP port from a browser (CORS); "*" for any.
    http_allowed_origins: tuple[str, ...] = ()
    # How often an open server stream's API key is checked again (a revoked key ends it).
    stream_auth_recheck_seconds: float = 5.0
    # How engine workers write their log lines (the core's are set up by the CLI).
    log_format: str = "text"
    # Webhook deliveries: timeouts, retries, private addresses (gateway/webhooks).
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # Cluster mode (PostgreSQL only): this node's id, address and lease settings; None: the
    # only gateway on its store.
    cluster: ClusterSettings | None = None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or default_sqlite_url(self.data_dir)

    @property
    def resolved_runtime_dir(self) -> Path:
        return self.runtime_dir or default_runtime_dir(self.data_dir)


def default_runtime_dir(data_dir: Path) -> Path:
    """A directory on memory-backed storage, private to this user and this data dir, so
    plaintext sessions never reach persistent disk (and two gateways never share one)."""
    tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    if MEMORY_FS.is_dir() and os.access(MEMORY_FS, os.W_OK):
        return MEMORY_FS / f"zapgate-{os.getuid()}" / tag
    return data_dir / "runtime"


def data_dir_from_env(flag: str | None) -> Path:
    return Path(flag or os.environ.get("ZAPGATE_DATA_DIR") or DEFAULT_DATA_DIR)


def database_url_from_env(flag: str | None) -> str | None:
    return flag or os.environ.get("ZAPGATE_DATABASE_URL") or None
