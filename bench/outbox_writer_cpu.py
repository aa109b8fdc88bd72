"""CPU per message of the outbox's batch writer, in process: `MessageRepository.create` driven
by concurrent callers (group commits, each message with its QUEUED event) through the writer
the gateway picks for the database, against the same repository through SQLAlchemy's async
engine (the path PostgreSQL took before it had a writer of its own), in the same run,
alternating. CPU is this process's (the event loop, plus the SQLite writer's thread); the
database server's own CPU is not in it.

    python bench/outbox_writer_cpu.py [--messages 6000] [--concurrency 64] [--rounds 3]
                                      [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.outbox_writers import OutboxWriter, SqlAlchemyWriter, outbox_writer

WRITERS: dict[str, Callable[[AsyncEngine], OutboxWriter]] = {
    "gateway's writer": outbox_writer,
    "SQLAlchemy": SqlAlchemyWriter,
}


async def cpu_per_message(repository: MessageRepository, messages: int, concurrency: int) -> float:
    numbers = iter(range(messages))

    async def caller() -> None:
        for n in numbers:
            await repository.create(
                MessageRecord(
                    tenant="bench",
                    instance_id="bench",
                    recipient_jid="5511999990000@s.whatsapp.net",
                    kind="text",
                    content={"text": f"Olá Ana, seu pedido {n} saiu para entrega."},
                )
            )

    before = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return (time.process_time() - before) / messages


async def measure(messages: int, concurrency: int, rounds: int, url: str) -> None:
    engine = await open_database(url)
    repositories = {
        name: MessageRepository(engine, MessageEvents(EventLog(engine)), writer=writer(engine))
        for name, writer in WRITERS.items()
    }
    costs: dict[str, list[float]] = {name: [] for name in WRITERS}
    try:
        for repository in repositories.values():  # warm-up: connections, prepared statements
            await cpu_per_message(repository, messages // 10, concurrency)
        for _ in range(rounds):
            for name, repository in repositories.items():
                costs[name].append(await cpu_per_message(repository, messages, concurrency))
    finally:
        for repository in repositories.values():
            repository.close()
        await engine.dispose()
    print(
        f"{engine.url.get_backend_name()}, {messages} messages x {rounds} rounds, {concurrency} callers"
    )
    for name, values in costs.items():
        rounds_us = ", ".join(f"{value * 1e6:.0f}" for value in values)
        print(f"{name:18} {statistics.median(values) * 1e6:6.1f} us CPU per message ({rounds_us})")
    ratios = [new / old for new, old in zip(*costs.values(), strict=True)]
    print(f"median ratio (gateway's writer / SQLAlchemy) {statistics.median(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        uvloop.run(measure(args.messages, args.concurrency, args.rounds, url))


if __name__ == "__main__":
    main()
