"""A PostgreSQL notification for the node an instance is handed over (or placed) to, so it
claims the instance at once instead of at its next look (up to TTL/3 later): the moved
instance's disconnect lasts until then. Only a speed-up: a notification that is lost (its
connection dropped) costs that wait, nothing else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

CHANNEL = "zapgate_handover"


def notice(target: str) -> sa.Select[tuple[Any]]:
    """Sent with the transaction that reserves a lease for `target` (on its commit)."""
    return sa.select(sa.func.pg_notify(CHANNEL, target))


async def listen(engine: AsyncEngine, node_id: str, wake: Callable[[], None]) -> None:
    """Calls `wake` for every notice to this node, on a connection of its own, until that
    connection closes (then raises: the caller's supervision listens again)."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # asyncpg's connection
        closed = asyncio.Event()

        def on_notice(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            if payload == node_id:
                wake()

        driver.add_termination_listener(lambda _conn: closed.set())
        await driver.add_listener(CHANNEL, on_notice)
        try:
            await closed.wait()
        finally:
            if not driver.is_closed():
                await driver.remove_listener(CHANNEL, on_notice)
    raise ConnectionError("the connection listening for hand-overs closed")
