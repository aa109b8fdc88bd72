"""The chat store (ChatStore, HistoryImport) against bare SQL over the same rows, through the
same SQLAlchemy async engine and driver, in the same run.

Data: M messages over C chats of one instance (text of a few words, both directions, times
spread over a year), written untimed with plain executemany INSERTs, plus each chat's row.

  ListChats     ChatStore.chats_page(limit=51) (the first page of 50 and the look-ahead row
                ListChats reads), against the bare SELECT of the same columns with the same
                WHERE / ORDER BY / LIMIT.
  messages      ChatStore.messages_page of a chat's newest 51 messages, against the bare
                SELECT of the same columns.
  history       HistoryImport.received of one blob of H messages over H/100 new chats (no
                bounds), against one executemany INSERT of the same rows (search text
                precomputed, untimed) and the chats' rows, in one transaction, into an
                emptied instance. A ticker task measures the longest event-loop stall of
                each side.

Medians of --rounds rounds (reads: of --calls calls each), sides alternating.

    python bench/chats.py [--messages 1000000] [--chats 10000] [--history 50000]
                          [--rounds 5] [--calls 50] [--database-url postgresql://...]
                          [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.history import HistoryImport
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.chat_reads import ChatStore
from zapgate.gateway.store.chat_settings import ChatSettings, ChatSettingsRepository
from zapgate.gateway.store.contacts import fold
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.schema import chat_messages, chats
from zapgate.sessions.events import HistoryChat, HistoryMessage, HistorySynced

TENANT, INSTANCE, IMPORTED = "bench-chats", "store", "import"
WORDS = [
    "oi",
    "tudo",
    "bem",
    "obrigado",
    "amanhã",
    "pedido",
    "entrega",
    "preço",
    "olá",
    "boleto",
    "pix",
    "sim",
    "não",
    "João",
]
YEAR_US = 365 * 86_400 * 1_000_000
NOW_US = 1_790_000_000 * 1_000_000
MAX = 2**63 - 1


def jid(n: int) -> str:
    return f"55119{n:08d}@s.whatsapp.net"


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))


async def populate(engine: AsyncEngine, messages: int, chat_count: int) -> None:
    rng = random.Random(7)
    newest: dict[int, tuple[int, int, str, str]] = {}
    batch: list[dict[str, Any]] = []
    async with engine.begin() as conn:
        await conn.execute(sa.delete(chat_messages).where(chat_messages.c.tenant == TENANT))
        await conn.execute(sa.delete(chats).where(chats.c.tenant == TENANT))
    for n in range(messages):
        chat = n % chat_count
        sent = NOW_US - YEAR_US + (n * YEAR_US // messages)
        sent -= sent % 1_000_000
        body = text(rng)
        batch.append(_row(INSTANCE, jid(chat), f"3A{n:016X}", n % 3 == 0, body, sent))
        newest[chat] = (sent, 0, f"3A{n:016X}", body)
        if len(batch) == 20_000:
            await _insert(engine, batch)
            batch = []
    await _insert(engine, batch)
    async with engine.begin() as conn:
        seqs = dict(
            (row.message_id, row.seq)
            for row in await conn.execute(
                sa.select(chat_messages.c.message_id, chat_messages.c.seq).where(
                    chat_messages.c.tenant == TENANT,
                    chat_messages.c.message_id.in_([v[2] for v in newest.values()]),
                )
            )
        )
        await conn.execute(
            sa.insert(chats),
            [
                _chat_row(INSTANCE, jid(chat), sent, seqs[message_id], message_id, body)
                for chat, (sent, _, message_id, body) in newest.items()
            ],
        )


def _row(
    instance: str, chat: str, message_id: str, from_me: bool, body: str, sent: int
) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "instance_id": instance,
        "chat_jid": chat,
        "message_id": message_id,
        "outbox_id": "",
        "sender_jid": "" if from_me else chat,
        "push_name": "",
        "from_me": from_me,
        "kind": "text",
        "text": body,
        "search_text": fold(body),
        "media_mime_type": "",
        "media_file_name": "",
        "sent_us": sent,
        "stored_us": NOW_US,
        "state": 0,
        "read_us": 0,
        "edits": None,
        "revoked_us": 0,
        "reactions": None,
        "from_history": True,
    }


def _chat_row(
    instance: str, chat: str, sent: int, seq: int, message_id: str, body: str
) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "instance_id": instance,
        "jid": chat,
        "name": "",
        "last_us": sent,
        "last_seq": seq,
        "last_message_id": message_id,
        "last_preview": body[:100],
        "last_from_me": False,
        "unread": 0,
    }


async def _insert(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    if rows:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(chat_messages), rows)


async def timed(call: Callable[[], Awaitable[object]], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


CHAT_COLUMNS = (
    "jid, name, last_us, last_seq, last_message_id, last_preview, last_from_me, unread, "
    "muted_until_us, archived, pinned"
)
MESSAGE_COLUMNS = (
    "seq, chat_jid, message_id, outbox_id, sender_jid, push_name, from_me, kind, text, "
    "media_mime_type, media_file_name, sent_us, state, read_us, revoked_us, from_history, "
    "edits, reactions"
)


async def reads(engine: AsyncEngine, calls: int, chat: str) -> dict[str, tuple[float, float]]:
    store = ChatStore(engine)
    bare_chats = sa.text(
        f"SELECT {CHAT_COLUMNS} FROM chats WHERE tenant = :t AND instance_id = :i "
        "ORDER BY last_us DESC, last_seq DESC LIMIT 51"
    )
    bare_messages = sa.text(
        f"SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE tenant = :t AND instance_id = :i "
        "AND chat_jid = :c AND (sent_us, seq) < (:a, :b) ORDER BY sent_us DESC, seq DESC LIMIT 51"
    )
    params = {"t": TENANT, "i": INSTANCE}

    async def bare(statement: sa.TextClause, **more: object) -> list[Any]:
        async with engine.connect() as conn:
            return list(await conn.execute(statement, {**params, **more}))

    async def listing() -> object:
        return await store.chats_page(TENANT, INSTANCE, after=None, limit=51)

    async def page() -> object:
        return await store.messages_page(
            TENANT, INSTANCE, chat, after=(MAX, MAX), newer=False, limit=51
        )

    assert len(await listing()) == len(await bare(bare_chats)) == 51  # type: ignore[arg-type]
    return {
        "ListChats first page": (
            await timed(lambda: bare(bare_chats), calls),
            await timed(listing, calls),
        ),
        "ListChatMessages page": (
            await timed(lambda: bare(bare_messages, c=chat, a=MAX, b=MAX), calls),
            await timed(page, calls),
        ),
    }


def history_blob(count: int) -> HistorySynced:
    rng = random.Random(11)
    chat_count = max(1, count // 100)
    messages = tuple(
        HistoryMessage(
            message_id=f"3H{n:016X}",
            chat_jid=jid(100_000 + n % chat_count),
            sender_jid=jid(100_000 + n % chat_count),
            from_me=n % 3 == 0,
            kind="text",
            timestamp=(NOW_US - YEAR_US // 2 + n * 1_000_000) / 1e6,
            text=text(rng),
        )
        for n in range(count)
    )
    history_chats = tuple(HistoryChat(jid(100_000 + c), f"chat {c}") for c in range(chat_count))
    return HistorySynced(f"{TENANT}/{IMPORTED}", "recent", 0, 100, True, history_chats, messages)


class StallMeter:
    """The longest gap between ticks of a task that only sleeps 1 ms at a time."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - 0.001)
            last = now

    def __enter__(self) -> StallMeter:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def empty_import(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in (chat_messages, chats):
            await conn.execute(
                sa.delete(table).where(table.c.tenant == TENANT, table.c.instance_id == IMPORTED)
            )


async def history(engine: AsyncEngine, blob: HistorySynced) -> tuple[float, float, float, float]:
    settings = ChatSettingsRepository(engine)
    await settings.put(TENANT, IMPORTED, ChatSettings(0, 0, 0))
    importer = HistoryImport(engine, EventLog(engine), settings, clock=lambda: NOW_US)
    rows = [
        _row(IMPORTED, m.chat_jid, m.message_id, m.from_me, m.text, int(m.timestamp * 1e6))
        for m in blob.messages
    ]
    newest = {row["chat_jid"]: row for row in rows}

    async def bare() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(chat_messages), rows)
            await conn.execute(
                sa.insert(chats),
                [
                    _chat_row(IMPORTED, c, r["sent_us"], 0, r["message_id"], r["text"])
                    for c, r in newest.items()
                ],
            )

    await empty_import(engine)
    with StallMeter() as bare_stall:
        start = time.perf_counter()
        await bare()
        bare_time = time.perf_counter() - start
    await empty_import(engine)
    with StallMeter() as ours_stall:
        start = time.perf_counter()
        await importer.received(TENANT, IMPORTED, blob)
        ours_time = time.perf_counter() - start
    async with engine.connect() as conn:
        stored = await conn.scalar(
            sa.select(sa.func.count()).where(
                chat_messages.c.tenant == TENANT, chat_messages.c.instance_id == IMPORTED
            )
        )
    assert stored == len(blob.messages), stored
    return bare_time, ours_time, bare_stall.longest, ours_stall.longest


async def bench(url: str, args: argparse.Namespace) -> None:
    engine = await open_database(url)
    try:
        start = time.perf_counter()
        await populate(engine, args.messages, args.chats)
        print(f"{url.split(':')[0]}: populated {args.messages:,} messages over {args.chats:,} "
              f"chats in {time.perf_counter() - start:.0f} s")  # fmt: skip
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sa.text("ANALYZE chats"))
                await conn.execute(sa.text("ANALYZE chat_messages"))
        read_rounds: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, pair in (await reads(engine, args.calls, jid(args.chats // 2))).items():
                read_rounds.setdefault(name, []).append(pair)
        for name, pairs in read_rounds.items():
            bare = statistics.median(p[0] for p in pairs)
            ours = statistics.median(p[1] for p in pairs)
            print(f"  {name}: bare {bare * 1e3:.2f} ms, zapgate {ours * 1e3:.2f} ms, "
                  f"ratio {ours / bare:.2f}")  # fmt: skip
        blob = history_blob(args.history)
        results = [await history(engine, blob) for _ in range(args.rounds)]
        bare, ours = (statistics.median(r[i] for r in results) for i in (0, 1))
        stall_bare, stall_ours = (max(r[i] for r in results) for i in (2, 3))
        print(f"  history import of {args.history:,}: bare {bare:.2f} s, zapgate {ours:.2f} s, "
              f"ratio {ours / bare:.2f}; longest stall bare {stall_bare * 1e3:.0f} ms, "
              f"zapgate {stall_ours * 1e3:.0f} ms")  # fmt: skip
        async with engine.begin() as conn:
            for table in (chat_messages, chats):
                await conn.execute(sa.delete(table).where(table.c.tenant == TENANT))
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            await bench(f"sqlite:///{Path(folder) / 'bench.db'}", args)
    if args.database_url:
        await bench(args.database_url, args)


if __name__ == "__main__":
    asyncio.run(main())
