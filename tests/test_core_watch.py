"""In cluster mode a worker whose core stops pinging it (paused, frozen) stops every
connection itself, before another node can take the instances over and connect the same
devices, and tells the core, which reconnects what it still owns (sessions/core_watch.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from tests.conftest import FAST_SIM
from tests.pool_recorder import Recorder
from zapgate.engine.v1 import worker_pb2 as wpb
from zapgate.gateway.cluster.settings import ClusterSettings
from zapgate.sessions import events as ev
from zapgate.sessions.core_watch import LOOKS_PER_SILENCE, CoreWatch
from zapgate.sessions.pool import PoolConfig, WorkerPool

KEY = "acme/shop"


async def test_a_worker_whose_core_goes_silent_stops_its_connections(tmp_path: Path) -> None:
    recorder = Recorder()
    config = PoolConfig(
        size=1,
        engine="sim",
        socket_dir=tmp_path / "workers",
        sim_timings_json=json.dumps(dataclasses.asdict(FAST_SIM)),
        ping_interval=3600.0,  # the test pings, as a live core would, then stops
        core_silence_seconds=2.0,
    )
    workers = WorkerPool(config, recorder.on_event, recorder.on_worker_lost)
    await workers.start()
    stub = workers.slots[0].stub
    assert stub is not None

    async def ping_like_a_live_core() -> None:
        while True:
            await stub.Ping(wpb.PingRequest())
            await asyncio.sleep(0.1)

    pinging = asyncio.create_task(ping_like_a_live_core())
    try:
        await workers.start_instance(KEY, tmp_path / "shop", "", run_id=7)
        qr = await recorder.wait_for(ev.QrShown)
        assert isinstance(qr, ev.QrShown)
        scan = wpb.SimulateRequest.ScanQr(code=qr.code, phone="+5511900000001")
        await workers.simulate(wpb.SimulateRequest(key=KEY, scan_qr=scan))
        await recorder.wait_for(ev.Connected)
        assert not [e for e in recorder.events if isinstance(e, ev.Disconnected)]
        pinging.cancel()  # the core is paused from here on

        dropped = await recorder.wait_for(ev.Disconnected)
        assert isinstance(dropped, ev.Disconnected)
        assert dropped.key == KEY
        assert "core stopped answering" in dropped.detail
        assert (await stub.Ping(wpb.PingRequest())).hosted == 0, "the connection is gone"
    finally:
        pinging.cancel()
        await workers.close()


def test_silence_is_judged_by_the_last_ping() -> None:
    now = [100.0]
    watch = CoreWatch(1.5, monotonic=lambda: now[0])
    now[0] += 1.4
    assert not watch.silent()
    watch.pinged()
    now[0] += 1.4
    assert not watch.silent(), "a ping restarts the silence"
    now[0] += 0.1
    assert watch.silent()


def test_connections_stop_before_a_paused_cores_leases_can_expire() -> None:
    """A paused core renewed at most TTL/3 before its pause, so its leases last 2/3 TTL
    more (from a pause just after a ping, the worst case); the watch looks every eighth of
    the silence: the connections are stopped before the leases can expire."""
    for ttl in (3.0, 15.0, 60.0):
        settings = ClusterSettings(node_id="a", lease_ttl_seconds=ttl)
        silence = settings.worker_silence_seconds
        latest_stop = silence + silence / LOOKS_PER_SILENCE  # measured from the last ping
        earliest_expiry = ttl - settings.renew_seconds
        assert latest_stop < earliest_expiry
