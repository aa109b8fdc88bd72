"""The scheduler's counters reach the state store even when a save fails: an instance stays
due until its counters are stored as they are (they used to be marked saved before the
write, and a failed write was swallowed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRepository
from zapgate.sessions.pool import PoolConfig, WorkerPool
from zapgate.v1 import instance_pb2 as ipb


async def ignore(*_: object) -> None:
    """The pool is never started: no engine is needed to save counters."""


class ReleasingDuringSave(InstanceRepository):
    """Its instance is released from the dispatcher (handed over) while its save runs."""

    dispatcher: Dispatcher
    armed = False

    async def update(self, *args: Any, **kwargs: Any) -> InstanceRecord:
        if self.armed:
            self.dispatcher.release("acme", "shop")
        return await super().update(*args, **kwargs)


async def test_an_instance_released_while_its_counters_are_saved_stops_nothing(
    tmp_path: Path,
) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    events = EventLog(engine)
    instances = ReleasingDuringSave(engine)
    messages = MessageRepository(engine, MessageEvents(events))
    pool = WorkerPool(PoolConfig(size=1, engine="sim", socket_dir=tmp_path), ignore, ignore)
    dispatcher = Dispatcher(messages, instances, InboundRepository(engine), pool, events)
    instances.dispatcher = dispatcher
    try:
        record = InstanceRecord("acme", "shop", "Shop", "", ipb.INSTANCE_STATE_CONNECTED)
        await instances.create(record)
        await dispatcher.pause("acme", "shop", "by hand")
        assert dispatcher.scheduler.dirty() == {"acme/shop"}
        instances.armed = True
        await dispatcher.stop()  # the save runs while the instance is released: no KeyError
        assert not dispatcher.scheduler.configured("acme/shop")
        assert dispatcher.scheduler.dirty() == set()
        stored = await instances.require("acme", "shop")
        assert stored.scheduler_state["paused"] == "by hand"
    finally:
        messages.close()
        await engine.dispose()


async def test_a_failed_counter_save_is_tried_again(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    events = EventLog(engine)
    instances = InstanceRepository(engine)
    messages = MessageRepository(engine, MessageEvents(events))
    pool = WorkerPool(PoolConfig(size=1, engine="sim", socket_dir=tmp_path), ignore, ignore)
    dispatcher = Dispatcher(messages, instances, InboundRepository(engine), pool, events)
    try:
        record = InstanceRecord("acme", "shop", "Shop", "", ipb.INSTANCE_STATE_CONNECTED)
        await instances.create(record)
        await dispatcher.pause("acme", "shop", "by hand")  # changes the exported counters
        assert dispatcher.scheduler.dirty() == {"acme/shop"}

        async with engine.begin() as conn:  # the store refuses the next write
            await conn.execute(sa.text("ALTER TABLE instances RENAME TO instances_away"))
        await dispatcher.stop()  # saves what changed: fails, logged
        assert dispatcher.scheduler.dirty() == {"acme/shop"}

        async with engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE instances_away RENAME TO instances"))
        await dispatcher.stop()
        assert dispatcher.scheduler.dirty() == set()
        stored = await instances.require("acme", "shop")
        assert stored.scheduler_state == dispatcher.scheduler.export_state("acme/shop")
    finally:
        messages.close()
        await engine.dispose()
