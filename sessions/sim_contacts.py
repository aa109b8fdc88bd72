"""The simulated phone's address book, kept in the instance's session store file as
whatsmeow keeps its contact store: it is snapshotted, encrypted and restored with the
session. SimulatorService.SetContacts replaces it; push names seen on incoming messages are
added the way whatsmeow records them."""

from __future__ import annotations

import dataclasses
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
)
"""
COLUMNS = tuple(field.name for field in dataclasses.fields(Contact))


class AddressBook:
    def __init__(self, store: SimStore) -> None:
        self.store = store

    def replace(self, contacts: list[Contact]) -> None:
        with closing(self.store.connect()) as db:
            db.execute(SCHEMA)
            db.execute("BEGIN")
            db.execute("DELETE FROM sim_contacts")
            db.executemany(
                f"INSERT OR REPLACE INTO sim_contacts ({', '.join(COLUMNS)})"  # noqa: S608
                f" VALUES ({', '.join('?' * len(COLUMNS))})",
                [dataclasses.astuple(contact) for contact in contacts],
            )
            db.execute("COMMIT")

    def note_push_name(self, jid: str, phone: str, lid: str, push_name: str) -> None:
        with closing(self.store.connect()) as db:
            db.execute(SCHEMA)
            db.execute(
                "INSERT INTO sim_contacts VALUES (?, ?, ?, '', '', ?, '')"
                " ON CONFLICT (jid) DO UPDATE SET push_name = excluded.push_name",
                (jid, phone, lid, push_name),
            )

    def all(self) -> list[Contact]:
        with closing(self.store.connect()) as db:
            db.execute(SCHEMA)
            rows = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM sim_contacts ORDER BY jid"  # noqa: S608
            ).fetchall()
        return [Contact(*row) for row in rows]
