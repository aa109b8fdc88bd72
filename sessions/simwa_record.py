"""The simulated WhatsApp server's own record, in one SQLite file of its data dir: every device
that attached (with counters: messages received, duplicates by message id, attaches,
replacements) and every stream replacement. A test reads it to prove that no device was ever
owned by two connections without one being kicked, and that no message reached a phone twice.
WAL mode: a kill -9 of the server loses nothing it had answered."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

RECORD_FILE_NAME = "simulated-whatsapp.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_jid TEXT PRIMARY KEY,
    device_identity TEXT NOT NULL,
    messages_received INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    attaches INTEGER NOT NULL DEFAULT 0,
    replacements INTEGER NOT NULL DEFAULT 0,
    node TEXT NOT NULL DEFAULT '',
    worker TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS delivered_ids (
    device_jid TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (device_jid, message_id)
);
CREATE TABLE IF NOT EXISTS replacements (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    device_jid TEXT NOT NULL,
    old_connection_id TEXT NOT NULL,
    old_node TEXT NOT NULL,
    old_worker TEXT NOT NULL,
    new_connection_id TEXT NOT NULL,
    new_node TEXT NOT NULL,
    new_worker TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Holder:
    """One connection of a device: who holds it."""

    connection_id: str
    node: str
    worker: str


@dataclass(frozen=True)
class Replacement:
    at: float
    device_jid: str
    old: Holder
    new: Holder


@dataclass(frozen=True)
class DeviceRow:
    device_jid: str
    device_identity: str
    messages_received: int
    duplicates: int
    attaches: int
    replacements: int
    node: str
    worker: str


class Record:
    """Held open by the server process (its only user); every write commits at once."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(
            data_dir / RECORD_FILE_NAME, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def attached(self, device_jid: str, identity: str, holder: Holder) -> None:
        self._db.execute(
            "INSERT INTO devices (device_jid, device_identity) VALUES (?, ?)"
            " ON CONFLICT (device_jid) DO NOTHING",
            (device_jid, identity),
        )
        self._db.execute(
            "UPDATE devices SET attaches = attaches + 1, node = ?, worker = ?,"
            " device_identity = ? WHERE device_jid = ?",
            (holder.node, holder.worker, identity, device_jid),
        )

    def replaced(self, device_jid: str, old: Holder, new: Holder) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "INSERT INTO replacements (at, device_jid, old_connection_id, old_node, old_worker,"
            " new_connection_id, new_node, new_worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), device_jid, *_holder(old), *_holder(new)),
        )
        self._db.execute(
            "UPDATE devices SET replacements = replacements + 1 WHERE device_jid = ?",
            (device_jid,),
        )
        self._db.execute("COMMIT")

    def message_delivered(self, device_jid: str, message_id: str) -> bool:
        """Counts a delivered message; True when the device had delivered this id before."""
        self._db.execute("BEGIN IMMEDIATE")
        seen = self._db.execute(
            "INSERT INTO delivered_ids VALUES (?, ?) ON CONFLICT DO NOTHING",
            (device_jid, message_id),
        )
        duplicate = seen.rowcount == 0
        self._db.execute(
            "UPDATE devices SET messages_received = messages_received + 1,"
            " duplicates = duplicates + ? WHERE device_jid = ?",
            (int(duplicate), device_jid),
        )
        self._db.execute("COMMIT")
        return duplicate

    def replacements(self) -> list[Replacement]:
        rows = self._db.execute(
            "SELECT at, device_jid, old_connection_id, old_node, old_worker,"
            " new_connection_id, new_node, new_worker FROM replacements ORDER BY seq"
        ).fetchall()
        return [Replacement(r[0], r[1], Holder(*r[2:5]), Holder(*r[5:8])) for r in rows]

    def devices(self) -> list[DeviceRow]:
        rows = self._db.execute(
            "SELECT device_jid, device_identity, messages_received, duplicates, attaches,"
            " replacements, node, worker FROM devices ORDER BY device_jid"
        ).fetchall()
        return [DeviceRow(*row) for row in rows]


def _holder(holder: Holder) -> tuple[str, str, str]:
    return (holder.connection_id, holder.node, holder.worker)
