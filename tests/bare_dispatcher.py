"""A dispatcher on a real SQLite store with a worker pool that is never started: enough for
what the dispatcher decides and saves without sending anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRepository
from zapgate.sessions.pool import PoolConfig, WorkerPool
from zapgate.v1 import instance_pb2 as ipb

SHOP = InstanceRecord("acme", "shop", "Shop", "", ipb.INSTANCE_STATE_CONNECTED)


async def ignore(*_: object) -> None:
    """The pool is never started: no engine is needed."""


@dataclass
class Bare:
    engine: AsyncEngine
    dispatcher: Dispatcher
    instances: InstanceRepository
    messages: MessageRepository


@asynccontextmanager
async def bare_dispatcher(
    tmp_path: Path, instances_type: type[InstanceRepository] = InstanceRepository
) -> AsyncIterator[Bare]:
    """The dispatcher, with instance `acme/shop` (CONNECTED) in its store."""
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    events = EventLog(engine)
    instances = instances_type(engine)
    messages = MessageRepository(engine, MessageEvents(events))
    pool = WorkerPool(PoolConfig(size=1, engine="sim", socket_dir=tmp_path), ignore, ignore)
    dispatcher = Dispatcher(messages, instances, InboundRepository(engine), pool, events)
    try:
        await instances.create(SHOP)
        yield Bare(engine, dispatcher, instances, messages)
    finally:
        messages.close()
        await engine.dispose()
