"""The gateway's long-lived tasks: restarted after a failure, counted, health turned
NOT_SERVING while one keeps failing, and every one awaited on stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import started_gateway
from zapgate.gateway.supervision import FAILURES_BEFORE_UNHEALTHY, Supervision


async def test_a_failing_task_is_restarted_counted_and_turns_health_off() -> None:
    health: list[bool] = []

    async def report(healthy: bool) -> None:
        health.append(healthy)

    supervision = Supervision(report, backoff_base=0.001, backoff_cap=0.001)
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= FAILURES_BEFORE_UNHEALTHY:
            raise RuntimeError(f"run {runs} fails")
        steady.set()
        await asyncio.Event().wait()  # then runs until stopped

    supervision.start("flaky", flaky)
    await asyncio.wait_for(steady.wait(), 10)
    await asyncio.sleep(0)  # the health report's own task runs
    assert supervision.failures["flaky"] == FAILURES_BEFORE_UNHEALTHY
    assert runs == FAILURES_BEFORE_UNHEALTHY + 1
    assert health == [False]
    assert not supervision.healthy
    await supervision.stop()


async def test_a_task_that_ends_is_not_restarted_and_stop_awaits_every_task() -> None:
    supervision = Supervision()
    ran: list[str] = []
    cleaned = asyncio.Event()

    async def once() -> None:
        ran.append("once")

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)  # cleanup that takes a moment
            cleaned.set()

    supervision.start("once", once)
    supervision.start("forever", forever)
    await asyncio.sleep(0.05)
    await supervision.stop()
    assert ran == ["once"]
    assert cleaned.is_set(), "stop returned before the task had finished"
    assert supervision.healthy


async def test_the_gateway_serves_health_and_awaits_its_loops_on_stop(tmp_path: Path) -> None:
    async with started_gateway(tmp_path) as running:
        stub = health_pb2_grpc.HealthStub(running.channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        supervision = running.gateway.runtime.supervision
        tasks = supervision.tasks()
        assert {t.get_name() for t in tasks} == {
            "dispatcher",
            "session keeper",
            "event retention",
            "chat retention",
        }
        assert not any(t.done() for t in tasks)
    # The gateway has stopped: every loop ended before the store was closed.
    assert all(t.done() for t in tasks)
