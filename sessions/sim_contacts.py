"""The simulated phone's contacts, kept in the instance's session store file as whatsmeow
keeps its contact store: snapshotted, encrypted and restored with the session. Two sources,
kept apart as whatsmeow keeps them apart: the address book (SimulatorService.SetContacts
replaces it: saved names, and push names as a history sync brings them) and push names
learned from incoming messages, which no SetContacts erases. A contact is the two merged; a
push name learned from a message is the newer one and wins."""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import closing

from zapgate.sessions.engine import Contact
from zapgate.sessions.sim_store import SimStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_contacts (
    jid TEXT PRIMARY KEY,
    phone TEXT NOT NULL,
    lid TEXT NOT NULL,
    full_name TEXT NOT NULL,
    first_name TEXT NOT NULL,
    push_name TEXT NOT NULL,
    business_name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_push_names (
    jid TEXT PRIMARY KEY,
    phone TEXT NOT NULL,
    lid TEXT NOT NULL,
    push_name TEXT NOT NULL
);
"""
COLUMNS = tuple(field.name for field in dataclasses.fields(Contact))


class AddressBook:
    def __init__(self, store: SimStore) -> None:
        self.store = store

    def replace(self, contacts: list[Contact]) -> None:
        """Replaces the address book; push names learned from messages stay."""
        with closing(self._connect()) as db:
            db.execute("BEGIN")
            db.execute("DELETE FROM sim_contacts")
            db.executemany(
                f"INSERT OR REPLACE INTO sim_contacts ({', '.join(COLUMNS)})"  # noqa: S608
                f" VALUES ({', '.join('?' * len(COLUMNS))})",
                [dataclasses.astuple(contact) for contact in contacts],
            )
            db.execute("COMMIT")

    def note_push_name(self, jid: str, phone: str, lid: str, push_name: str) -> None:
        with closing(self._connect()) as db:
            db.execute(
                "INSERT INTO sim_push_names VALUES (?, ?, ?, ?) ON CONFLICT (jid) DO UPDATE"
                " SET push_name = excluded.push_name,"
                " lid = COALESCE(NULLIF(excluded.lid, ''), lid)",
                (jid, phone, lid, push_name),
            )

    def all(self) -> list[Contact]:
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM sim_contacts"  # noqa: S608
            ).fetchall()
            learned = db.execute("SELECT jid, phone, lid, push_name FROM sim_push_names").fetchall()
        contacts = {row[0]: Contact(*row) for row in rows}
        for jid, phone, lid, push_name in learned:
            saved = contacts.get(jid)
            if saved is None:
                contacts[jid] = Contact(jid, phone, lid, push_name=push_name)
            else:
                contacts[jid] = dataclasses.replace(
                    saved, push_name=push_name, lid=saved.lid or lid
                )
        return [contacts[jid] for jid in sorted(contacts)]

    def _connect(self) -> sqlite3.Connection:
        db = self.store.connect()
        try:
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db
