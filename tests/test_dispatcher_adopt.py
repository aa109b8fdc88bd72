"""Taking an instance over schedules its queue once: a send the node accepted between
winning the lease and adopting the instance is already queued there (adoption used to
queue it a second time, which the scheduler refused, and the instance was never
connected)."""

from __future__ import annotations

from pathlib import Path

from tests.bare_dispatcher import bare_dispatcher
from zapgate.gateway.store.messages import MessageRecord


async def test_adopting_an_instance_keeps_a_send_accepted_just_before(tmp_path: Path) -> None:
    async with bare_dispatcher(tmp_path) as bare:
        dispatcher, messages = bare.dispatcher, bare.messages
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
