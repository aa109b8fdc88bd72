"""Taking an instance over schedules its queue once: a send the node accepted between
winning the lease and adopting the instance is already queued there (adoption used to
queue it a second time, which the scheduler refused, and the instance was never
connected)."""

from __future__ import annotations

from pathlib import Path

from tests.test_dispatcher_counters import ignore
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.message_events import MessageEvents
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.sessions.pool import PoolConfig, WorkerPool
from zapgate.v1 import instance_pb2 as ipb


async def test_adopting_an_instance_keeps_a_send_accepted_just_before(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    events = EventLog(engine)
    instances = InstanceRepository(engine)
    messages = MessageRepository(engine, MessageEvents(events))
    pool = WorkerPool(PoolConfig(size=1, engine="sim", socket_dir=tmp_path), ignore, ignore)
    dispatcher = Dispatcher(messages, instances, InboundRepository(engine), pool, events)
    try:
        await instances.create(
            InstanceRecord("acme", "shop", "Shop", "", ipb.INSTANCE_STATE_CONNECTED)
        )
        early, _ = await dispatcher.accept(
            MessageRecord("acme", "shop", "5511@s.whatsapp.net", "text", {"text": "early"})
        )
        other = MessageRecord("acme", "shop", "5512@s.whatsapp.net", "text", {"text": "queued"})
        await messages.create(other)  # queued by the previous owner
        assert not dispatcher.scheduler.holds("acme/shop", other.id)

        await dispatcher.adopt("acme", "shop")

        assert dispatcher.scheduler.holds("acme/shop", early.id)
        assert dispatcher.scheduler.holds("acme/shop", other.id)
        assert dispatcher.scheduler.stats("acme/shop").queued == 2

        # Released to the engine meanwhile (in flight): adopting again leaves it there.
        dispatcher.scheduler.set_ready("acme/shop", True)
        (released,) = dispatcher.scheduler.due(limit=1)
        await dispatcher.adopt("acme", "shop")
        stats = dispatcher.scheduler.stats("acme/shop")
        assert stats.in_flight == released.message.message_id
        assert stats.queued == 1
    finally:
        messages.close()
        await engine.dispose()
