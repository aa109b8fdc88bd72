"""Run as a module, a gateway that only enqueues: big outbox batches through the PostgreSQL
writer, one after another, each message with an event naming it, until it is killed
(`python -m tests.outbox_batches URL BATCH`; prints "batch N" after each commit). For
tests/test_outbox_writers_postgres.py, which kills it with SIGKILL mid-batch."""

from __future__ import annotations

import asyncio
import sys

from tests.outbox_rows import event_row, message_row
from zapgate.gateway.store.db import create_engine
from zapgate.gateway.store.outbox_writers import PostgresWriter
from zapgate.gateway.store.schema import events

MEDIA = bytes(range(256)) * 64  # 16 KiB a message: a batch takes a while to send and insert


async def _write_until_killed(url: str, batch: int) -> None:
    engine = create_engine(url)
    writer = PostgresWriter(engine)
    for n in range(sys.maxsize):
        ids = [f"crash-{n}-{k}" for k in range(batch)]
        rows = [message_row(k) | {"id": id_, "media": MEDIA} for k, id_ in enumerate(ids)]
        named = [event_row(k) | {"payload": id_.encode()} for k, id_ in enumerate(ids)]
        await writer.write(rows, [(events, named)])
        print(f"batch {n}", flush=True)


if __name__ == "__main__":
    asyncio.run(_write_until_killed(sys.argv[1], int(sys.argv[2])))
