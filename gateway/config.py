"""Settings of `zapgate serve`, resolved once from flags and environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zapgate.gateway.store.db import default_sqlite_url

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATA_DIR = "./zapgate-data"
DEFAULT_GRACE_SECONDS = 10.0


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

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or default_sqlite_url(self.data_dir)


def data_dir_from_env(flag: str | None) -> Path:
    return Path(flag or os.environ.get("ZAPGATE_DATA_DIR") or DEFAULT_DATA_DIR)


def database_url_from_env(flag: str | None) -> str | None:
    return flag or os.environ.get("ZAPGATE_DATABASE_URL") or None
