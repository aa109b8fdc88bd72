"""The contacts of each instance as of its last sync, searchable by name and phone prefix."""

from __future__ import annotations

import dataclasses
import itertools
import unicodedata
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.schema import contacts
from zapgate.sessions.engine import Contact

NAME_FIELDS = ("full_name", "first_name", "push_name", "business_name")
CONTACT_FIELDS = tuple(f.name for f in dataclasses.fields(Contact))
# Between the display name and the other names in search_name: sorts before any letter, so
# the list orders by display name first.
NAME_SEPARATOR = "\x1f"
# Rows a sync reads or writes at a time; between chunks the event loop runs other tasks
# (100,000 contacts in one go held it for about a second).
SYNC_CHUNK = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class SyncCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0


@dataclass(frozen=True)
class StoredContact:
    contact: Contact
    search_name: str
    synced_us: int


def fold(text: str) -> str:
    """Lower case without accents: "João" and "JOAO" both become "joao"."""
    if text.isascii():  # nothing to decompose
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    # filterfalse drops combining marks (non-zero class) without a Python-level loop.
    return "".join(itertools.filterfalse(unicodedata.combining, decomposed)).casefold()


def search_name(contact: Contact) -> str:
    display = contact.full_name or contact.push_name or contact.business_name or contact.phone
    others = [getattr(contact, name) for name in NAME_FIELDS]
    return fold(NAME_SEPARATOR.join([display, *others]))


class ContactRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock

    async def replace_all(self, tenant: str, instance_id: str, synced: list[Contact]) -> SyncCounts:
        """Makes the stored contacts equal to `synced` (deduplicated by JID, the last entry
        winning) in one transaction, and counts what changed."""
        latest = {contact.jid: contact for contact in synced if contact.jid}
        now = self._clock()
        where = sa.and_(contacts.c.tenant == tenant, contacts.c.instance_id == instance_id)
        async with self._engine.begin() as conn:
            rows = await conn.stream(  # read in chunks too (see SYNC_CHUNK)
                sa.select(*(contacts.c[f] for f in CONTACT_FIELDS)).where(where)
            )
            stored: dict[str, Contact] = {}
            async for part in rows.partitions(SYNC_CHUNK):
                stored.update((row[0], Contact(*row)) for row in part)
            added = [c for jid, c in latest.items() if jid not in stored]
            updated = [c for jid, c in latest.items() if jid in stored and stored[jid] != c]
            removed = [jid for jid in stored if jid not in latest]
            for chunk in _chunks(added, SYNC_CHUNK):
                await conn.execute(
                    sa.insert(contacts), [self._row(tenant, instance_id, c, now) for c in chunk]
                )
            for chunk in _chunks(updated, SYNC_CHUNK):
                await conn.execute(
                    sa.update(contacts)
                    .where(where, contacts.c.jid == sa.bindparam("b_jid"))
                    .values(
                        {f: sa.bindparam(f"b_{f}") for f in (*CONTACT_FIELDS[1:], "search_name")}
                    ),
                    [
                        {f"b_{k}": v for k, v in self._row(tenant, instance_id, c, now).items()}
                        for c in chunk
                    ],
                )
            for jids in _chunks(removed):
                await conn.execute(sa.delete(contacts).where(where, contacts.c.jid.in_(jids)))
            # Rows just added already carry `now`: only the others are rewritten (on a first
            # sync, none).
            await conn.execute(
                sa.update(contacts).where(where, contacts.c.synced_us != now).values(synced_us=now)
            )
        return SyncCounts(
            added=len(added),
            updated=len(updated),
            unchanged=len(latest) - len(added) - len(updated),
            removed=len(removed),
        )

    @staticmethod
    def _row(tenant: str, instance_id: str, contact: Contact, now: int) -> dict[str, object]:
        return {
            "tenant": tenant,
            "instance_id": instance_id,
            # Not dataclasses.asdict: its deep copy of every field was a fifth of a first
            # sync's time, and the fields are all strings.
            **{field: getattr(contact, field) for field in CONTACT_FIELDS},
            "search_name": search_name(contact),
            "synced_us": now,
        }

    async def page(
        self,
        tenant: str,
        instance_id: str,
        *,
        query: str = "",
        phone_prefix: str = "",
        after: tuple[str, str] | None = None,
        limit: int,
    ) -> list[StoredContact]:
        """Contacts in (search_name, jid) order, after the keyset position `after`."""
        conditions = [contacts.c.tenant == tenant, contacts.c.instance_id == instance_id]
        if query:
            conditions.append(contacts.c.search_name.like(f"%{_escape(fold(query))}%", escape="\\"))
        if phone_prefix:
            digits = phone_prefix.lstrip("+")
            conditions.append(contacts.c.phone.like(f"+{_escape(digits)}%", escape="\\"))
        if after is not None:
            conditions.append(sa.tuple_(contacts.c.search_name, contacts.c.jid) > after)
        statement = (
            sa.select(contacts)
            .where(*conditions)
            .order_by(contacts.c.search_name, contacts.c.jid)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [
            StoredContact(
                Contact(**{f: row[f] for f in CONTACT_FIELDS}), row["search_name"], row["synced_us"]
            )
            for row in rows
        ]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _chunks(items: list[T], size: int = 500) -> list[list[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
