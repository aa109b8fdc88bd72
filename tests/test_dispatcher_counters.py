"""The scheduler's counters reach the state store even when a save fails: an instance stays
due until its counters are stored as they are (they used to be marked saved before the
write, and a failed write was swallowed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.bare_dispatcher import SHOP, bare_dispatcher
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository


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
    async with bare_dispatcher(tmp_path, ReleasingDuringSave) as bare:
        dispatcher, instances = bare.dispatcher, bare.instances
        assert isinstance(instances, ReleasingDuringSave)
        instances.dispatcher = dispatcher
        await dispatcher.pause("acme", "shop", "by hand")
        assert dispatcher.scheduler.dirty() == {"acme/shop"}
        instances.armed = True
        await dispatcher.stop()  # the save runs while the instance is released: no KeyError
        assert not dispatcher.scheduler.configured("acme/shop")
        assert dispatcher.scheduler.dirty() == set()
        stored = await instances.require("acme", "shop")
        assert stored.scheduler_state["paused"] == "by hand"


class ReleasingTheOtherDuringSave(InstanceRepository):
    """Saving one instance's counters, the other is released (handed over) meanwhile."""

    dispatcher: Dispatcher
    armed = False

    async def update(self, *args: Any, **kwargs: Any) -> InstanceRecord:
        if self.armed:
            self.armed = False
            for key in ("shop", "other"):
                if key != args[1] and self.dispatcher.scheduler.configured(f"acme/{key}"):
                    self.dispatcher.release("acme", key)
        return await super().update(*args, **kwargs)


async def test_an_instance_released_while_another_is_saved_is_skipped(tmp_path: Path) -> None:
    """The dirty instances are listed before the first save; one released during an
    earlier save is no longer the scheduler's (it used to stop the dispatcher: KeyError)."""
    async with bare_dispatcher(tmp_path, ReleasingTheOtherDuringSave) as bare:
        dispatcher, instances = bare.dispatcher, bare.instances
        assert isinstance(instances, ReleasingTheOtherDuringSave)
        instances.dispatcher = dispatcher
        await instances.create(InstanceRecord("acme", "other", "Other", "", SHOP.state))
        await dispatcher.pause("acme", "shop", "by hand")
        await dispatcher.pause("acme", "other", "by hand")
        assert dispatcher.scheduler.dirty() == {"acme/shop", "acme/other"}
        instances.armed = True
        await dispatcher.stop()  # no KeyError for the one released meanwhile
        configured = [k for k in ("shop", "other") if dispatcher.scheduler.configured(f"acme/{k}")]
        assert len(configured) == 1
        assert dispatcher.scheduler.dirty() == set()


async def test_a_failed_counter_save_is_tried_again(tmp_path: Path) -> None:
    async with bare_dispatcher(tmp_path) as bare:
        dispatcher = bare.dispatcher
        await dispatcher.pause("acme", "shop", "by hand")  # changes the exported counters
        assert dispatcher.scheduler.dirty() == {"acme/shop"}

        async with bare.engine.begin() as conn:  # the store refuses the next write
            await conn.execute(sa.text("ALTER TABLE instances RENAME TO instances_away"))
        await dispatcher.stop()  # saves what changed: fails, logged
        assert dispatcher.scheduler.dirty() == {"acme/shop"}

        async with bare.engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE instances_away RENAME TO instances"))
        await dispatcher.stop()
        assert dispatcher.scheduler.dirty() == set()
        stored = await bare.instances.require("acme", "shop")
        assert stored.scheduler_state == dispatcher.scheduler.export_state("acme/shop")
