"""The engine boundary with real worker processes: failures cross it as their own types, one
event that fails never stops the others, and a dead worker is restarted without waiting for
the core to take its instances back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import FAST_SIM
from tests.pool_recorder import Recorder
from zapgate.engine.v1 import worker_pb2 as wpb
from zapgate.sessions import events as ev
from zapgate.sessions.engine import OutgoingContent
from zapgate.sessions.errors import NotConnected, NotRunning, Rejected, SendRefused
from zapgate.sessions.pool import LostRun, PoolConfig, WorkerPool

KEY = "acme/shop"


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[tuple[WorkerPool, Recorder]]:
    recorder = Recorder()
    config = PoolConfig(
        size=1,
        engine="sim",
        socket_dir=tmp_path / "workers",
        sim_timings_json=json.dumps(dataclasses.asdict(FAST_SIM)),
        ping_interval=0.5,
    )
    pool = WorkerPool(config, recorder.on_event, recorder.on_worker_lost)
    await pool.start()
    try:
        yield pool, recorder
    finally:
        await pool.close()


async def test_engine_failures_cross_the_worker_boundary_as_their_own_types(
    pool: tuple[WorkerPool, Recorder], tmp_path: Path
) -> None:
    workers, recorder = pool
    text = OutgoingContent(text="hi")
    with pytest.raises(NotRunning):
        await workers.send(KEY, "5511911111111@s.whatsapp.net", text)

    await workers.start_instance(KEY, tmp_path / "shop", "", run_id=7)
    qr = await recorder.wait_for(ev.QrShown)
    assert isinstance(qr, ev.QrShown)
    # Started, still pairing: the engine says "not connected", not a bare failure.
    with pytest.raises(NotConnected):
        await workers.send(KEY, "5511911111111@s.whatsapp.net", text)
    with pytest.raises(Rejected):
        await workers.simulate(
            wpb.SimulateRequest(key=KEY, scan_qr=wpb.SimulateRequest.ScanQr(code="wrong"))
        )

    scan = wpb.SimulateRequest.ScanQr(code=qr.code, phone="+5511900000001")
    await workers.simulate(wpb.SimulateRequest(key=KEY, scan_qr=scan))
    await recorder.wait_for(ev.Connected)
    fail = wpb.SimulateRequest.FailSends(phones=["+5511922222222"], code="463")
    await workers.simulate(wpb.SimulateRequest(key=KEY, fail_sends=fail))
    with pytest.raises(SendRefused) as refused:
        await workers.send(KEY, "5511922222222@s.whatsapp.net", text)
    assert refused.value.code == "463"
    sent = await workers.send(KEY, "5511911111111@s.whatsapp.net", text)
    assert sent.message_id


async def test_an_event_the_core_fails_to_handle_never_stops_the_others(
    pool: tuple[WorkerPool, Recorder], tmp_path: Path
) -> None:
    workers, recorder = pool
    recorder.fail_next = 1  # the first event of the run raises in the core
    await workers.start_instance(KEY, tmp_path / "shop", "", run_id=7)
    first_qr = await recorder.wait_for(ev.QrShown)
    assert isinstance(first_qr, ev.QrShown)
    assert first_qr.index >= 1, "the failed event was the first QR; the pump went on"
    assert workers.failures == 1


async def test_a_dead_worker_restarts_without_waiting_for_the_core(
    pool: tuple[WorkerPool, Recorder], tmp_path: Path
) -> None:
    workers, recorder = pool
    recorder.hang_on_lost = True  # the core never finishes taking the lost instances
    await workers.start_instance(KEY, tmp_path / "shop", "", run_id=7)
    await recorder.wait_for(ev.QrShown)
    slot = workers.slots[0]
    old_pid = slot.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    await asyncio.wait_for(recorder.lost_reported.wait(), 30)
    assert recorder.lost == [LostRun(KEY, 7)]
    for _ in range(1500):  # the replacement comes up while the report still hangs
        if slot.ready.is_set() and slot.pid != old_pid:
            break
        await asyncio.sleep(0.02)
    assert slot.ready.is_set()
    assert slot.pid != old_pid
    assert slot.restarts == 1
