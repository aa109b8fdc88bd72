"""A worker's events reach the core concurrently across instances and in order within one:
an instance whose event is slow to handle (its commit waiting) holds up only its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.test_start_batches import one_sim_worker, paired_store
from zapgate.sessions import events as ev


async def test_a_slow_event_holds_up_only_its_own_instance(tmp_path: Path) -> None:
    release = asyncio.Event()
    i0_waiting = asyncio.Event()
    handled: list[tuple[str, str]] = []
    others_connected = asyncio.Event()
    count = 5

    async def on_event(run_id: int, event: ev.EngineEvent) -> None:
        if event.key == "acme/i0" and isinstance(event, ev.Connected):
            i0_waiting.set()
            await release.wait()  # as a commit that takes long
        handled.append((event.key, type(event).__name__))
        if sum(kind == "Connected" for key, kind in handled if key != "acme/i0") == count - 1:
            others_connected.set()

    pool = one_sim_worker(tmp_path, on_event)
    await pool.start()
    try:
        for n in range(count):
            runtime_dir = tmp_path / "runtime" / f"i{n}"
            paired_store(runtime_dir, n)
            await pool.start_instance(f"acme/i{n}", runtime_dir, "", run_id=n + 1)
            if n == 0:  # i0's Connected is the first event on the stream, and stuck
                await asyncio.wait_for(i0_waiting.wait(), 60)  # guards a hang only
        # Handled one after the other, the others' events would wait behind i0's forever.
        await asyncio.wait_for(others_connected.wait(), 60)  # guards a hang only
        assert ("acme/i0", "Connected") not in handled
        release.set()
        while ("acme/i0", "Connected") not in handled:
            await asyncio.sleep(0.01)
    finally:
        release.set()
        await pool.close()
