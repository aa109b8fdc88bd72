"""The simulator's session store: an SQLite file in the instance's runtime directory holding
real key material, laid out like whatsmeow's own store (a device row with its keys), so
persistence and encryption are exercised on real secret bytes."""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_device (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    registration_id INTEGER NOT NULL,
    noise_key BLOB NOT NULL,
    identity_key BLOB NOT NULL,
    adv_secret BLOB NOT NULL,
    jid TEXT,
    phone TEXT,
    banned_until REAL NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class SimDevice:
    registration_id: int
    noise_key: bytes  # X25519 private key (32 bytes): whoever holds it can be this device
    identity_key: bytes  # X25519 private key (32 bytes)
    adv_secret: bytes
    jid: str | None
    phone: str | None
    banned_until: float

    @property
    def paired(self) -> bool:
        return self.jid is not None

    def qr_code(self, ref: str) -> str:
        """whatsmeow's QR payload: `ref,noiseKeyB64,identityKeyB64,advSecretB64`."""
        parts = [public_key_b64(self.noise_key), public_key_b64(self.identity_key)]
        return ",".join([ref, *parts, base64.b64encode(self.adv_secret).decode()])


def public_key_b64(private: bytes) -> str:
    public = X25519PrivateKey.from_private_bytes(private).public_key()
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


class SimStore:
    """Opened, used and closed per call: the file is never held open, so another process
    (the core, taking snapshots) can read it with normal SQLite locking."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def load_or_create(self) -> SimDevice:
        with closing(self.connect()) as db:
            db.execute(SCHEMA)
            row = db.execute(
                "SELECT registration_id, noise_key, identity_key, adv_secret, jid, phone,"
                " banned_until FROM sim_device"
            ).fetchone()
            if row is None:
                row = (
                    secrets.randbelow(16380) + 1,
                    _private_key(),
                    _private_key(),
                    secrets.token_bytes(32),
                    None,
                    None,
                    0.0,
                )
                db.execute("INSERT INTO sim_device VALUES (1, ?, ?, ?, ?, ?, ?, ?)", row)
        return SimDevice(*row)

    def save_pairing(self, jid: str, phone: str) -> None:
        self._update("jid = ?, phone = ?", jid, phone)

    def save_ban(self, banned_until: float) -> None:
        self._update("banned_until = ?", banned_until)

    def _update(self, assignments: str, *values: object) -> None:
        with closing(self.connect()) as db:
            db.execute(SCHEMA)
            db.execute(f"UPDATE sim_device SET {assignments} WHERE id = 1", values)  # noqa: S608

    def wipe(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()
