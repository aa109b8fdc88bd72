"""Ways events get appended, for tests/test_event_order.py. Run as a module it is another
gateway node: a process with its own engine and event log, appending to the same database
until it has done its share (`python -m tests.event_appenders URL TENANT COUNT INSTANCE...`;
it prints "ready" once connected and starts on a line from stdin)."""

from __future__ import annotations

import asyncio
import sys

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.db import create_engine
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.schema import instances
from zapgate.v1 import event_pb2 as pb
from zapgate.v1 import instance_pb2 as ipb


async def log_appends(log: EventLog, tenant: str, instance_id: str, count: int) -> None:
    """EventLog.append, one after another (concurrent callers share group commits)."""
    for n in range(count):
        await log.append(tenant, instance_id, pb.SendingPaused(reason=f"{instance_id} {n}"))


async def state_changes(
    engine: AsyncEngine, log: EventLog, tenant: str, instance_id: str, count: int
) -> None:
    """Transactions that change a row and append its event, as state changes do."""
    for n in range(count):
        event = pb.StateChanged(state=ipb.INSTANCE_STATE_CONNECTING, detail=str(n))
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(instances)
                .where(instances.c.tenant == tenant, instances.c.id == instance_id)
                .values(state_detail=str(n), update_time_us=instances.c.update_time_us + 1)
            )
            await append_events(conn, [log.row(tenant, instance_id, event)])
        log.committed()


async def _node(url: str, tenant: str, count: int, instance_ids: list[str]) -> None:
    engine = create_engine(url)
    try:
        log = EventLog(engine)
        async with engine.connect() as conn:  # connected before the start line
            await conn.execute(sa.select(1))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await asyncio.gather(
            *(log_appends(log, tenant, f"{i}-log", count) for i in instance_ids),
            *(state_changes(engine, log, tenant, i, count) for i in instance_ids),
        )
    finally:
        await engine.dispose()


if __name__ == "__main__":
    url, tenant, count, *ids = sys.argv[1:]
    asyncio.run(_node(url, tenant, int(count), ids))
