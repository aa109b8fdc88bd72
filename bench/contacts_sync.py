"""Contact sync and search (ContactRepository) against bare SQL over the same rows, through the
same SQLAlchemy async engine and driver, in the same run.

Data: N contacts shaped like a Brazilian phone's address book (accented names, +55 mobiles,
push names, a few business accounts, LIDs for about half), generated from a fixed seed.

  first sync  replace_all(N new contacts) into an empty table, against one executemany
              INSERT of the same rows (search_name precomputed, untimed) in one transaction.
  re-sync     replace_all with 1% changed, 1% removed and 1% added, against the bare
              equivalent that reaches the same table content: SELECT all, a diff of tuples,
              executemany INSERT / UPDATE / DELETE, and one UPDATE of synced_us for the rest.
  searches    ContactRepository.page(limit=50) for a name ("joao"), a phone prefix, and a
              name that matches nothing (a walk over every row), against a bare
              SELECT ... WHERE ... LIKE ... ORDER BY search_name, jid LIMIT 50.

Each side runs alone on its own rows (the table is emptied before each side's first sync), the
order of the sides alternates between rounds, and an untimed warm-up round goes first. After each
re-sync both sides' tables are compared: same rows, every synced_us set to that sync's time.
During both syncs a ticker task measures the longest event-loop stall (how long a gateway could
not serve anything else). On PostgreSQL the table is vacuumed after emptying it and analyzed
before the searches (untimed), so neither side meets leftovers of the other.

SQLite (the embedded default, a file in a temporary directory on disk) always; PostgreSQL too
when a URL is given (rows under the tenant "bench-contacts" only, deleted afterwards):

    python bench/contacts_sync.py [--contacts 100000] [--rounds 5] [--searches 20]
                                  [--database-url postgresql://user@host/db]
                                  (or ZAPGATE_BENCH_DATABASE_URL)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.store.contacts import ContactRepository, SyncCounts, search_name
from zapgate.gateway.store.db import open_database
from zapgate.sessions.engine import Contact

TENANT = "bench-contacts"
COLUMNS = (
    "tenant",
    "instance_id",
    "jid",
    "phone",
    "lid",
    "full_name",
    "first_name",
    "push_name",
    "business_name",
    "search_name",
    "synced_us",
)
CONTACT_COLUMNS = COLUMNS[2:9]  # Contact's fields, in its order

FIRST_NAMES = (
    "João", "José", "Antônio", "Francisco", "Carlos", "Paulo", "Pedro", "Lucas", "Luís",
    "Marcos", "Luiz", "Gabriel", "Rafael", "Daniel", "Marcelo", "Bruno", "Eduardo", "Felipe",
    "Raimundo", "Rodrigo", "Sérgio", "Fábio", "Márcio", "André", "Vinícius", "Otávio", "Caio",
    "Thiago", "Mateus", "Cássio", "Maria", "Ana", "Francisca", "Antônia", "Adriana", "Juliana",
    "Márcia", "Fernanda", "Patrícia", "Aline", "Sandra", "Camila", "Amanda", "Bruna", "Jéssica",
    "Letícia", "Júlia", "Luciana", "Vanessa", "Mônica", "Flávia", "Cecília", "Lúcia",
    "Conceição", "Raíssa", "Vitória", "Inês", "Débora", "Bárbara", "Tânia",
)  # fmt: skip
COMPOUND_FIRST_NAMES = (
    "Maria José", "João Pedro", "Ana Clara", "Maria Eduarda", "João Vitor", "Luiz Otávio",
    "Ana Luíza", "José Antônio", "Maria Cecília", "João Gabriel",
)  # fmt: skip
SURNAMES = (
    "Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima",
    "Gomes", "Costa", "Ribeiro", "Martins", "Carvalho", "Almeida", "Lopes", "Soares",
    "Fernandes", "Vieira", "Barbosa", "Rocha", "Dias", "Nascimento", "Andrade", "Moreira",
    "Nunes", "Marques", "Machado", "Mendes", "Freitas", "Cardoso", "Ramos", "Gonçalves",
    "Santana", "Teixeira", "Araújo", "Conceição", "Simões", "Magalhães", "Brandão", "Assunção",
    "Falcão", "Guimarães", "Patrício", "Damião", "Estêvão",
)  # fmt: skip
PARTICLES = ("", "", "", "da ", "dos ", "de ")
ADDRESS_BOOK_TAGS = (
    "Trabalho", "Vizinha", "Academia", "Escola", "Igreja", "Condomínio", "Faculdade", "Uber",
    "Dentista", "Contador",
)  # fmt: skip
PREFIXES = ("Tia ", "Tio ", "Dr. ", "Dra. ", "Vó ", "Prima ", "Seu ", "Dona ")
NICKNAMES = ("Zé", "Bia", "Duda", "Nanda", "Lu", "Tati", "Gabi", "Rafa", "Dudu", "Juju", "Léo")
EMOJI = ("🙏", "❤️", "🌻", "⚽", "✨", "😎", "🇧🇷", "🌸")
BUSINESSES = (
    "Padaria São João", "Açaí da {first}", "Oficina do {first}", "{surname} Materiais de Construção",
    "Salão Beleza Pura", "Pet Shop Cão & Gato", "Farmácia {surname}", "Auto Peças Paraná",
    "Mercadinho {surname}", "Clínica Odontológica {surname}", "Confeitaria Doce Ilusão",
    "Imobiliária {surname} & Filhos",
)  # fmt: skip
# Area codes, São Paulo and Rio more often (as on a phone in the south-east).
AREA_CODES = (11,) * 6 + (21,) * 3 + (31, 41, 47, 51, 61, 62, 71, 81, 85, 91, 92, 98)

NAME_QUERY = "joao"
PHONE_PREFIX = "+5521"
NO_MATCH_QUERY = "xyzzy"
STALL_TICK = 0.005


def make_contacts(rng: random.Random, count: int, taken: set[str]) -> list[Contact]:
    """`count` contacts with JIDs not in `taken` (which they are added to)."""
    made = []
    while len(made) < count:
        kind = rng.random()
        area = rng.choice(AREA_CODES)
        if kind < 0.05:  # a business account, often a landline
            number = f"55{area}{rng.choice('2345')}{rng.randrange(10**7):07d}"
        else:
            number = f"55{area}9{rng.randrange(10**8):08d}"
        jid = f"{number}@s.whatsapp.net"
        if jid in taken:
            continue
        taken.add(jid)
        lid = f"{rng.randrange(10**13, 10**15)}@lid" if rng.random() < 0.5 else ""
        first = rng.choice(COMPOUND_FIRST_NAMES if rng.random() < 0.1 else FIRST_NAMES)
        surname = rng.choice(SURNAMES)
        full = first_name = push = business = ""
        if kind < 0.05:
            business = rng.choice(BUSINESSES).format(first=first, surname=surname)
            push = business if rng.random() < 0.7 else ""
            if rng.random() < 0.4:
                full = business
        elif kind < 0.25:  # not in the address book: only a push name (history sync, messages)
            push = _push_name(rng, first, surname)
        else:
            full = f"{first} {rng.choice(PARTICLES)}{surname}"
            if rng.random() < 0.3:
                full += f" {rng.choice(SURNAMES)}"
            if rng.random() < 0.08:
                full += f" {rng.choice(ADDRESS_BOOK_TAGS)}"
            if rng.random() < 0.05:
                full = rng.choice(PREFIXES) + full
            first_name = full.split()[0]
            if rng.random() < 0.6:
                push = _push_name(rng, first, surname)
        made.append(Contact(jid, f"+{number}", lid, full, first_name, push, business))
    return made


def _push_name(rng: random.Random, first: str, surname: str) -> str:
    roll = rng.random()
    if roll < 0.15:
        name = rng.choice(NICKNAMES)
    elif roll < 0.35:
        name = f"{first.split()[0]} {surname}"
    else:
        name = first.split()[0]
    if rng.random() < 0.15:
        name += f" {rng.choice(EMOJI)}"
    return name


def changed_phone_book(rng: random.Random, contacts: list[Contact]) -> list[Contact]:
    """1% renamed (new push name or address-book name), 1% gone, 1% new; shuffled."""
    one_percent = len(contacts) // 100
    picked = rng.sample(range(len(contacts)), 2 * one_percent)
    removed, changed = set(picked[:one_percent]), set(picked[one_percent:])
    taken = {c.jid for c in contacts}
    kept = []
    for index, contact in enumerate(contacts):
        if index in removed:
            continue
        if index in changed:
            if rng.random() < 0.5:
                contact = replace(
                    contact, push_name=f"{contact.push_name or 'Novo'} {rng.choice(EMOJI)}"
                )
            else:
                full = f"{contact.full_name or rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
                contact = replace(contact, full_name=full, first_name=full.split()[0])
        kept.append(contact)
    synced = kept + make_contacts(rng, one_percent, taken)
    rng.shuffle(synced)
    return synced


@dataclass
class Samples:
    bare: list[float] = field(default_factory=list)
    zapgate: list[float] = field(default_factory=list)


class Bare:
    """The same work as plain SQL through the same engine: the lower bound for any store."""

    def __init__(self, engine: AsyncEngine, instance_id: str) -> None:
        self.engine = engine
        self.instance_id = instance_id
        marks = _placeholders(engine, len(COLUMNS))
        where = f"tenant = {_mark(engine, 1)} AND instance_id = {_mark(engine, 2)}"
        self.insert = f"INSERT INTO contacts ({', '.join(COLUMNS)}) VALUES ({marks})"
        self.select_all = f"SELECT {', '.join(CONTACT_COLUMNS)} FROM contacts WHERE {where}"
        sets = ", ".join(f"{c} = {_mark(engine, n)}" for n, c in enumerate(COLUMNS[3:], 1))
        first_key = len(COLUMNS) - 2
        self.update = (
            f"UPDATE contacts SET {sets} WHERE tenant = {_mark(engine, first_key)}"
            f" AND instance_id = {_mark(engine, first_key + 1)} AND jid = {_mark(engine, first_key + 2)}"
        )
        self.delete = f"DELETE FROM contacts WHERE {where} AND jid = {_mark(engine, 3)}"
        # Placeholders are numbered in the order they appear (qmark is positional).
        self.touch = (
            f"UPDATE contacts SET synced_us = {_mark(engine, 1)} WHERE tenant = {_mark(engine, 2)}"
            f" AND instance_id = {_mark(engine, 3)} AND synced_us <> {_mark(engine, 4)}"
        )
        order = "ORDER BY search_name, jid LIMIT 50"
        self.by_name = f"SELECT {', '.join(COLUMNS)} FROM contacts WHERE {where} AND search_name LIKE {_mark(engine, 3)} {order}"
        self.by_phone = f"SELECT {', '.join(COLUMNS)} FROM contacts WHERE {where} AND phone LIKE {_mark(engine, 3)} {order}"

    def rows(self, contacts: Sequence[Contact], now: int) -> list[tuple[object, ...]]:
        return [(TENANT, self.instance_id, *astuple(c), search_name(c), now) for c in contacts]

    async def first_sync(self, rows: list[tuple[object, ...]]) -> None:
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql(self.insert, rows)

    async def resync(self, rows: list[tuple[object, ...]], now: int) -> SyncCounts:
        key = (TENANT, self.instance_id)
        latest = {row[2]: row for row in rows}
        async with self.engine.begin() as conn:
            stored = {r[0]: tuple(r) for r in await conn.exec_driver_sql(self.select_all, key)}
            added = [row for jid, row in latest.items() if jid not in stored]
            updated = [
                (*row[3:], *key, jid)
                for jid, row in latest.items()
                if jid in stored and stored[jid] != row[2:9]
            ]
            removed = [(*key, jid) for jid in stored if jid not in latest]
            if added:
                await conn.exec_driver_sql(self.insert, added)
            if updated:
                await conn.exec_driver_sql(self.update, updated)
            if removed:
                await conn.exec_driver_sql(self.delete, removed)
            await conn.exec_driver_sql(self.touch, (now, *key, now))
        unchanged = len(latest) - len(added) - len(updated)
        return SyncCounts(len(added), len(updated), unchanged, len(removed))

    async def search(self, statement: str, pattern: str) -> list[object]:
        async with self.engine.connect() as conn:
            return list(await conn.exec_driver_sql(statement, (TENANT, self.instance_id, pattern)))


def _mark(engine: AsyncEngine, n: int) -> str:
    return f"${n}" if engine.dialect.paramstyle == "numeric_dollar" else "?"


def _placeholders(engine: AsyncEngine, count: int) -> str:
    return ", ".join(_mark(engine, n) for n in range(1, count + 1))


async def timed(operation: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    start = time.perf_counter()
    result = await operation()
    return time.perf_counter() - start, result


async def timed_with_stall(
    operation: Callable[[], Awaitable[object]],
) -> tuple[float, float, object]:
    """Seconds taken, and the longest time the event loop could not run anything else
    (what every other call of a gateway would wait during a sync): a task that sleeps
    STALL_TICK at a time measures how late it wakes."""
    longest = 0.0

    async def ticker() -> None:
        nonlocal longest
        while True:
            before = time.perf_counter()
            await asyncio.sleep(STALL_TICK)
            longest = max(longest, time.perf_counter() - before - STALL_TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        seconds, result = await timed(operation)
    finally:
        task.cancel()
    return seconds, longest, result


async def clear(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM contacts WHERE tenant = :t"), {"t": TENANT})
    await settle(engine, "VACUUM contacts")


async def settle(engine: AsyncEngine, statement: str) -> None:
    """PostgreSQL only (untimed): reclaim dead rows / refresh planner statistics, so neither
    side meets autovacuum's leftovers or a stale plan. SQLite keeps no statistics unless
    asked (zapgate never runs ANALYZE) and reuses freed pages by itself."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(statement)


async def table_digest(conn: AsyncConnection, instance_id: str) -> tuple[str, set[int]]:
    """A digest of the rows (without tenant, instance and time) and the synced_us values."""
    rows = await conn.execute(
        sa.text(
            "SELECT jid, phone, lid, full_name, first_name, push_name, business_name,"
            " search_name, synced_us FROM contacts WHERE tenant = :t AND instance_id = :i"
            " ORDER BY jid"
        ),
        {"t": TENANT, "i": instance_id},
    )
    digest, times = hashlib.sha256(), set()
    for row in rows:
        digest.update(repr(tuple(row[:-1])).encode())
        times.add(row[-1])
    return digest.hexdigest(), times


@dataclass
class Results:
    first: Samples = field(default_factory=Samples)
    resync: Samples = field(default_factory=Samples)
    first_stall: Samples = field(default_factory=Samples)
    resync_stall: Samples = field(default_factory=Samples)
    searches: dict[str, Samples] = field(default_factory=dict)

    def search(self, name: str) -> Samples:
        return self.searches.setdefault(name, Samples())


class ZapgateSide:
    name = "zapgate"

    def __init__(self, engine: AsyncEngine, book: list[Contact], changed: list[Contact]) -> None:
        self.repo = ContactRepository(engine)
        self.instance_id = "zapgate-side"
        self.book, self.changed = book, changed

    def prepare(self) -> None:
        """Nothing to prepare: replace_all gets the engine's contacts as they come."""

    async def first_sync(self) -> SyncCounts:
        return await self.repo.replace_all(TENANT, self.instance_id, self.book)

    async def resync(self) -> SyncCounts:
        self.resync_us = time.time_ns() // 1000  # replace_all's clock reads at least this
        return await self.repo.replace_all(TENANT, self.instance_id, self.changed)

    def searches(self) -> dict[str, Callable[[], Awaitable[Sequence[object]]]]:
        def page(**kwargs: str) -> Callable[[], Awaitable[Sequence[object]]]:
            return lambda: self.repo.page(TENANT, self.instance_id, limit=50, **kwargs)

        return {
            f'name "{NAME_QUERY}"': page(query=NAME_QUERY),
            f"phone prefix {PHONE_PREFIX}": page(phone_prefix=PHONE_PREFIX),
            "name matching nothing": page(query=NO_MATCH_QUERY),
        }


class BareSide:
    name = "bare"

    def __init__(self, engine: AsyncEngine, book: list[Contact], changed: list[Contact]) -> None:
        self.sql = Bare(engine, "bare-side")
        self.instance_id = "bare-side"
        self.book, self.changed = book, changed

    def prepare(self) -> None:
        """The rows as tuples with search_name and synced_us computed (untimed)."""
        self.first_rows = self.sql.rows(self.book, time.time_ns() // 1000)
        self.resync_us = time.time_ns() // 1000 + 1  # later than the first sync's rows
        self.resync_rows = self.sql.rows(self.changed, self.resync_us)

    async def first_sync(self) -> SyncCounts:
        await self.sql.first_sync(self.first_rows)
        return SyncCounts(added=len(self.first_rows))

    async def resync(self) -> SyncCounts:
        return await self.sql.resync(self.resync_rows, self.resync_us)

    def searches(self) -> dict[str, Callable[[], Awaitable[Sequence[object]]]]:
        sql = self.sql
        return {
            f'name "{NAME_QUERY}"': lambda: sql.search(sql.by_name, f"%{NAME_QUERY}%"),
            f"phone prefix {PHONE_PREFIX}": lambda: sql.search(sql.by_phone, f"{PHONE_PREFIX}%"),
            "name matching nothing": lambda: sql.search(sql.by_name, f"%{NO_MATCH_QUERY}%"),
        }


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


async def run_side(
    side: ZapgateSide | BareSide, engine: AsyncEngine, searches: int, results: Results | None
) -> str:
    """One side's first sync, re-sync and searches on its own rows; returns the table digest."""
    count = len(side.book)
    await clear(engine)
    side.prepare()
    first, first_stall, counts = await timed_with_stall(side.first_sync)
    check(counts == SyncCounts(added=count), f"{side.name} first sync: {counts}")
    resync, resync_stall, counts = await timed_with_stall(side.resync)
    one_percent = count // 100
    expected = SyncCounts(one_percent, one_percent, count - 2 * one_percent, one_percent)
    check(counts == expected, f"{side.name} re-sync: {counts}, expected {expected}")
    async with engine.connect() as conn:
        digest, times = await table_digest(conn, side.instance_id)
    check(len(times) == 1, f"{side.name}: synced_us differs between rows after the re-sync")
    check(times.pop() >= side.resync_us, f"{side.name}: synced_us not set by the re-sync")
    await settle(engine, "ANALYZE contacts")
    searchers = side.searches()
    for name, search in searchers.items():
        found = len(await search())
        check(found == (0 if "nothing" in name else 50), f"{side.name} {name}: {found} rows")
    if results is not None:
        getattr(results.first, side.name).append(first)
        getattr(results.resync, side.name).append(resync)
        getattr(results.first_stall, side.name).append(first_stall)
        getattr(results.resync_stall, side.name).append(resync_stall)
        for name, search in searchers.items():
            samples = [(await timed(search))[0] for _ in range(searches)]
            getattr(results.search(name), side.name).append(statistics.median(samples))
    return digest


async def measure(label: str, url: str, count: int, rounds: int, searches: int) -> None:
    rng = random.Random(7)
    book = make_contacts(rng, count, set())
    changed = changed_phone_book(rng, book)
    engine = await open_database(url)
    results = Results()
    try:
        for round_ in range(rounds + 1):  # round 0: warm-up, untimed
            sides = (ZapgateSide(engine, book, changed), BareSide(engine, book, changed))
            digests = {}
            for side in reversed(sides) if round_ % 2 else sides:
                digests[side.name] = await run_side(
                    side, engine, searches, results if round_ else None
                )
            check(digests["bare"] == digests["zapgate"], "the two sides left different rows")
        await clear(engine)
    finally:
        await engine.dispose()
    report(label, count, rounds, searches, results)


def report(label: str, count: int, rounds: int, searches: int, results: Results) -> None:
    print(
        f"\n{label}: {count:,} contacts, median of {rounds} rounds (searches: median of {searches} each)"
    )
    print(f"{'measure':<34} {'bare':>10} {'zapgate':>10} {'ratio':>7}   zapgate/bare per round")
    lines = [
        ("first sync", results.first),
        ("re-sync (1% chg, 1% del, 1% new)", results.resync),
        *((f"search {name}", samples) for name, samples in results.searches.items()),
    ]
    for name, samples in lines:
        bare, zap = statistics.median(samples.bare), statistics.median(samples.zapgate)
        per_round = " ".join(
            f"{z / b:.2f}" for z, b in zip(samples.zapgate, samples.bare, strict=True)
        )
        print(
            f"{name:<34} {_duration(bare):>10} {_duration(zap):>10} {zap / bare:>6.2f}x   {per_round}"
        )
    for name, samples in (
        ("first sync", results.first_stall),
        ("re-sync", results.resync_stall),
    ):
        print(
            f"{'longest loop stall, ' + name:<34} {_duration(statistics.median(samples.bare)):>10}"
            f" {_duration(statistics.median(samples.zapgate)):>10}"
        )


def _duration(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 0.1 else f"{seconds * 1e3:.2f} ms"


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="zapgate-bench-") as tmp:  # on disk, not tmpfs
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'zapgate.db'}"
        await measure(
            "SQLite (aiosqlite, file on disk)", url, args.contacts, args.rounds, args.searches
        )
    if args.database_url:
        await measure(
            "PostgreSQL (asyncpg)", args.database_url, args.contacts, args.rounds, args.searches
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
