"""The simulator's phone side: what recipients received from an instance, in order, with
times, and the receipts their phones still owe. Kept in an SQLite file in the instance's
runtime directory, so it survives a worker or gateway crash (tests check that nothing was
delivered twice, and that receipts due meanwhile arrive after the reconnect, as WhatsApp's
do)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from zapgate.sessions.engine import OutgoingContent

# Columns added after the first release: a phone file from an older build gains them.
_ADDED_COLUMNS = (
    "quoted_message_id",
    "mentioned_jids",
    "target_message_id",
    "poll_options",
    "poll_selectable",
    "view_once",
    "link_url",
    "link_title",
    "link_description",
    "link_thumbnail_size",
)
_COLUMNS = (
    "recipient_jid, kind, text, message_id, received_at, media_size, media_sha256, "
    + ", ".join(_ADDED_COLUMNS)
)
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS.split(", ")))
PHONE_FILE_NAME = "sim-phone.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS received (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient_jid TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    media_size INTEGER NOT NULL,
    media_sha256 TEXT NOT NULL,
    quoted_message_id TEXT NOT NULL DEFAULT '',
    mentioned_jids TEXT NOT NULL DEFAULT '',
    target_message_id TEXT NOT NULL DEFAULT '',
    poll_options TEXT NOT NULL DEFAULT '',
    poll_selectable TEXT NOT NULL DEFAULT '',
    view_once TEXT NOT NULL DEFAULT '',
    link_url TEXT NOT NULL DEFAULT '',
    link_title TEXT NOT NULL DEFAULT '',
    link_description TEXT NOT NULL DEFAULT '',
    link_thumbnail_size TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS pending_receipts (
    message_id TEXT NOT NULL,
    recipient_jid TEXT NOT NULL,
    kind TEXT NOT NULL,
    due_at REAL NOT NULL,
    PRIMARY KEY (message_id, kind)
);
"""


@dataclass(frozen=True)
class Received:
    recipient_jid: str
    # text, image, ..., reaction, edit, revoke; read (receipts the instance sent); composing,
    # recording or paused (chat presence)
    kind: str
    text: str  # the text, caption, location name or contact name; a reaction's emoji
    message_id: str
    received_at: float
    media_size: int = 0
    media_sha256: str = ""
    quoted_message_id: str = ""
    mentioned_jids: str = ""  # comma-separated
    target_message_id: str = ""  # what a reaction, edit or revoke acts on; read: the ids
    poll_options: str = ""  # a poll's options, one a line (its question is `text`)
    poll_selectable: str = ""  # a poll: how many a voter may choose, as digits
    view_once: str = ""  # "1" when sent view-once
    link_url: str = ""  # a text's link preview
    link_title: str = ""
    link_description: str = ""
    link_thumbnail_size: str = ""  # bytes of its thumbnail, as digits


def describe(recipient_jid: str, content: OutgoingContent, message_id: str) -> Received:
    media = next(
        (
            m
            for m in (
                content.image,
                content.video,
                content.audio,
                content.document,
                content.sticker,
            )
            if m is not None
        ),
        None,
    )
    text = content.text or content.location_name or content.contact_name
    if media is not None:
        text = media.caption
    if content.action == "reaction":
        text = content.reaction_emoji
    poll = content.kind == "poll"
    if poll:
        text = content.poll_question
    return Received(
        recipient_jid,
        content.kind,
        text,
        message_id,
        time.time(),
        len(media.data) if media else 0,
        hashlib.sha256(media.data).hexdigest() if media else "",
        quoted_message_id=content.quote.message_id if content.quote else "",
        mentioned_jids=",".join(content.mentions),
        target_message_id=content.target.message_id if content.target else "",
        poll_options="\n".join(content.poll_options),
        poll_selectable=str(content.poll_selectable) if poll else "",
        view_once="1" if content.view_once else "",
        link_url=content.link_url,
        link_title=content.link_title,
        link_description=content.link_description,
        link_thumbnail_size=str(len(content.link_thumbnail)) if content.link_thumbnail else "",
    )


@dataclass(frozen=True)
class PendingReceipt:
    message_id: str
    recipient_jid: str
    kind: str  # delivered, read
    due_at: float  # wall-clock seconds: it must outlive the worker process


class PhoneLog:
    """Opened and closed per call by default (the core reads the file of a worker's instance
    from its own process). `keep_open`: one connection for the life of the object, in WAL mode
    (the simulated WhatsApp server, its only user, on a disk where a per-call open and its
    fsyncs would be the bottleneck; WAL still survives a kill -9 of the process)."""

    def __init__(self, runtime_dir: Path, *, keep_open: bool = False) -> None:
        self.path = runtime_dir / PHONE_FILE_NAME
        self._keep_open = keep_open
        self._kept: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # a kept connection is used from worker threads

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if not self._keep_open:
            with closing(self._connect()) as db:
                yield db
            return
        with self._lock:
            if self._kept is None:
                self._kept = self._connect(check_same_thread=False)
                self._kept.execute("PRAGMA journal_mode=WAL")
                self._kept.execute("PRAGMA synchronous=NORMAL")
            yield self._kept

    def close(self) -> None:
        with self._lock:
            if self._kept is not None:
                self._kept.close()
                self._kept = None

    def _connect(self, *, check_same_thread: bool = True) -> sqlite3.Connection:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not 0644, whatever the umask
        os.close(fd)
        db = sqlite3.connect(
            self.path, timeout=10, isolation_level=None, check_same_thread=check_same_thread
        )
        db.executescript(SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(received)")}
        for column in _ADDED_COLUMNS:
            if column not in present:
                db.execute(f"ALTER TABLE received ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
        return db

    def append(self, received: Received, receipts: list[PendingReceipt] | None = None) -> None:
        """Records a received message and the receipts its phone will send, together."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO pending_receipts VALUES (?, ?, ?, ?)",
                    [(r.message_id, r.recipient_jid, r.kind, r.due_at) for r in receipts or ()],
                )
                db.execute(
                    f"INSERT INTO received ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",  # noqa: S608
                    dataclasses.astuple(received),
                )
            except BaseException:
                db.execute("ROLLBACK")  # a kept connection must not stay in a transaction
                raise
            db.execute("COMMIT")

    def pending_receipts(self) -> list[PendingReceipt]:
        """Receipts not sent yet, earliest first."""
        if not self.path.exists():
            return []
        with self._db() as db:
            rows = db.execute(
                "SELECT message_id, recipient_jid, kind, due_at FROM pending_receipts"
                " ORDER BY due_at, rowid"
            ).fetchall()
        return [PendingReceipt(*row) for row in rows]

    def receipt_sent(self, message_id: str, kind: str) -> None:
        with self._db() as db:
            db.execute(
                "DELETE FROM pending_receipts WHERE message_id = ? AND kind = ?", (message_id, kind)
            )

    def read(self) -> list[Received]:
        if not self.path.exists():
            return []
        with self._db() as db:
            query = f"SELECT {_COLUMNS} FROM received ORDER BY seq"  # noqa: S608 (constants)
            rows = db.execute(query).fetchall()
        return [Received(*row) for row in rows]
