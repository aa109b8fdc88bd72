"""Cluster mode: how soon an event appended by another node wakes this node's subscribers.
Two event logs on two engines of one PostgreSQL database stand for two nodes; this node
listens with the gateway's own CrossNodeWakeups. Measured per append, from the call that
commits it to this node's wake-up:

- same node (baseline): this node's own append wakes its waiters directly;
- other node, LISTEN/NOTIFY: the other node's commit notifies this node;
- other node, polling only (before LISTEN/NOTIFY: a look every 0.5 s).

    python bench/cluster_wakeups.py [--rounds 200] [--poll-rounds 40]
                                    [--database-url postgresql://...]

Without --database-url (or $ZAPGATE_BENCH_DATABASE_URL) it starts a throwaway PostgreSQL
server from the Debian packages' binaries, as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.postgres import create_database, find_bindir, running_server
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.wakeups import GAP_POLL_SECONDS, CrossNodeWakeups
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.gateway.supervision import Supervision
from zapgate.v1 import event_pb2 as pb


async def unreachable() -> object:
    raise ConnectionError("not listening: polling only")


async def latencies(
    writer: EventLog, here: EventLog, rounds: int, spread: float = 0.0
) -> list[float]:
    """With `spread`, each append comes at a random moment (uniform over that many
    seconds) after the previous wake-up, not in step with a poll."""
    rng = random.Random(7)
    found = []
    for n in range(rounds):
        await asyncio.sleep(rng.uniform(0, spread))
        woken = here.signal()
        started = time.perf_counter()
        await writer.append("bench", "i0", pb.SendingPaused(reason=str(n)))
        await woken.wait()
        found.append(time.perf_counter() - started)
    return found


async def measure(url: str, rounds: int, poll_rounds: int) -> None:
    engine = await open_database(url)
    other = create_engine(url)
    here, there = EventLog(engine), EventLog(other)
    try:
        same = await latencies(here, here, rounds)

        supervision = Supervision()
        wakeups = CrossNodeWakeups.for_database(here, engine)
        supervision.start("listen", wakeups.listen)
        supervision.start("poll", wakeups.poll)
        while not wakeups.listening:
            await asyncio.sleep(0.01)
        notified = await latencies(there, here, rounds)
        await supervision.stop()

        supervision = Supervision()
        polling = CrossNodeWakeups(here, unreachable)
        supervision.start("poll", polling.poll)
        polled = await latencies(there, here, poll_rounds, spread=GAP_POLL_SECONDS)
        await supervision.stop()
    finally:
        await other.dispose()
        await engine.dispose()

    def row(name: str, values: list[float]) -> str:
        median = statistics.median(values) * 1000
        p95 = sorted(values)[int(len(values) * 0.95) - 1] * 1000
        ratio = statistics.median(values) / statistics.median(same)
        return f"| {name} | {len(values)} | {median:.1f} | {p95:.1f} | {ratio:.2f} |"

    print("| append -> wake-up | appends | median ms | p95 ms | median / same node |")
    print("| --- | --- | --- | --- | --- |")
    print(row("same node (baseline)", same))
    print(row("other node, LISTEN/NOTIFY", notified))
    print(row("other node, polling every 0.5 s", polled))


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL not found: give --database-url")
    with running_server(bindir) as admin:
        yield create_database(admin, "zapgate_bench_wakeups")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--poll-rounds", type=int, default=40)
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    with database(args.database_url) as url:
        asyncio.run(measure(url, args.rounds, args.poll_rounds))


if __name__ == "__main__":
    main()
