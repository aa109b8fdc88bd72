"""The core's side of the engine workers: spawns them, talks to them over unix sockets,
places instances on them, and restarts a worker that dies (kill -9, Go fatal error).

Every failed call raises a type of sessions/errors.py, the same types the engines raise in
the workers (carried over the wire as an EngineErrorDetail)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from zapgate.engine.v1 import worker_pb2 as pb
from zapgate.engine.v1 import worker_pb2_grpc
from zapgate.sessions import wire
from zapgate.sessions.engine import (
    GRPC_MESSAGE_OPTIONS,
    Contact,
    NumberCheck,
    OutgoingContent,
    PairCode,
    SendResult,
)
from zapgate.sessions.errors import EngineError, NotRunning, WorkerUnavailable, from_wire
from zapgate.sessions.events import EngineEvent, InstanceKey
from zapgate.sessions.group_commit import GroupCommit
from zapgate.sessions.key_order import KeyOrder
from zapgate.sessions.worker import ERROR_DETAIL_KEY

log = logging.getLogger(__name__)

OnEvent = Callable[[int, EngineEvent], Awaitable[None]]
# The instances a dead worker hosted, each with the run it was on.
OnWorkerLost = Callable[[list["LostRun"]], Awaitable[None]]
R = TypeVar("R")


@dataclass(frozen=True)
class LostRun:
    key: InstanceKey
    run_id: int


@dataclass(frozen=True)
class PoolConfig:
    size: int
    engine: str  # "sim" or "neonize"
    socket_dir: Path
    sim_timings_json: str = "{}"
    # host:port of a simulated WhatsApp server the simulator attaches to ("": in-worker
    # phone), and this node's label in its record.
    sim_server: str = ""
    sim_node: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    ready_timeout: float = 60.0
    ping_interval: float = 5.0
    ping_failures_to_kill: int = 3
    # Cluster mode: a worker stops every connection when the core has not pinged it for
    # this long (sessions/core_watch.py); 0: never (single node: nobody else connects them).
    core_silence_seconds: float = 0.0
    restart_base_seconds: float = 0.2
    restart_cap_seconds: float = 30.0
    # How long the events a dead worker already sent may take to reach the core.
    drain_seconds: float = 5.0


class WorkerSlot:
    """One worker process, restarted in place whenever it dies."""

    def __init__(self, index: int, config: PoolConfig, pool: WorkerPool) -> None:
        self.index = index
        self.config = config
        self.pool = pool
        self.keys: set[InstanceKey] = set()
        self.runs: dict[InstanceKey, int] = {}  # the run each started instance is on
        self.process: asyncio.subprocess.Process | None = None
        self.stub: worker_pb2_grpc.EngineWorkerServiceAsyncStub | None = None
        self.ready = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.restarts = 0
        # Concurrent starts go out in one StartInstances call (a restart starts them all).
        self.starts: GroupCommit[pb.StartInstanceRequest, pb.StartResult] = GroupCommit(
            self._start_many
        )

    async def _start_many(self, requests: list[pb.StartInstanceRequest]) -> list[pb.StartResult]:
        if self.stub is None:
            raise WorkerUnavailable(f"engine worker {self.index} is not running")
        reply = await _call(self.stub.StartInstances(pb.StartInstancesRequest(instances=requests)))
        if len(reply.results) != len(requests):
            raise WorkerUnavailable(f"engine worker {self.index} answered a batch partly")
        return list(reply.results)

    @property
    def socket_path(self) -> Path:
        return self.config.socket_dir / f"worker-{self.index}.sock"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def run(self) -> None:
        """Keeps a worker alive until close(): spawn, serve, and on death restart with
        exponential backoff and jitter. The instances it hosted are reported lost without
        waiting for the supervisor: their restarts need the new worker."""
        failures = 0
        while not self._closing.is_set():
            started = asyncio.get_running_loop().time()
            try:
                await self._spawn_and_serve()
            except (OSError, RuntimeError, TimeoutError, grpc.aio.AioRpcError) as error:
                log.error("engine worker %d failed to start: %s", self.index, error)  # noqa: TRY400
            except Exception:
                log.exception("engine worker %d: its runner failed", self.index)
                self.pool.failures += 1
            if self._closing.is_set():
                return
            self.restarts += 1
            lost = [LostRun(key, run_id) for key, run_id in sorted(self.runs.items())]
            self.keys, self.runs = set(), {}
            log.error(
                "engine worker %d died; restarting (%d instances to place again)",
                self.index,
                len(lost),
            )
            self.pool.report_lost(lost)
            stable = asyncio.get_running_loop().time() - started > 60
            failures = 0 if stable else failures + 1
            cap = min(
                self.config.restart_cap_seconds, self.config.restart_base_seconds * 2**failures
            )
            await asyncio.sleep(random.uniform(cap / 2, cap))  # noqa: S311 (not crypto)

    def _sim_server_args(self) -> list[str]:
        if not self.config.sim_server:
            return []
        return [
            "--sim-server",
            self.config.sim_server,
            "--sim-node",
            self.config.sim_node,
            "--sim-worker",
            f"worker-{self.index}",
        ]

    async def _spawn_and_serve(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zapgate.sessions.worker",
            "--socket",
            str(self.socket_path),
            "--engine",
            self.config.engine,
            "--sim-timings",
            self.config.sim_timings_json,
            *self._sim_server_args(),
            "--core-silence-seconds",
            str(self.config.core_silence_seconds),
            "--log-level",
            self.config.log_level,
            "--log-format",
            self.config.log_format,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,  # Go prints there (docs/engine.md, hazard 6)
        )
        try:
            await self._connect()
            self.ready.set()
            log.info("engine worker %d ready (pid %d)", self.index, self.process.pid)
            pump = asyncio.create_task(self._pump_events())
            pinger = asyncio.create_task(self._ping_loop())
            await self.process.wait()
            pinger.cancel()
            # Events the worker sent before it died (receipts, inbound messages) are still
            # on their way: let the core take them before their instances are reported lost.
            await asyncio.wait([pump], timeout=self.config.drain_seconds)
            pump.cancel()
            await asyncio.gather(pump, pinger, return_exceptions=True)
        finally:
            self.ready.clear()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            if self._channel is not None:
                await self._channel.close(None)
                self._channel = None

    async def _connect(self) -> None:
        assert self.process is not None
        deadline = asyncio.get_running_loop().time() + self.config.ready_timeout
        while not self.socket_path.exists():
            if self.process.returncode is not None:
                raise RuntimeError(f"worker {self.index} exited at start")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"worker {self.index} did not start")
            await asyncio.sleep(0.02)
        self._channel = grpc.aio.insecure_channel(
            f"unix:{self.socket_path}", options=GRPC_MESSAGE_OPTIONS
        )
        await asyncio.wait_for(self._channel.channel_ready(), self.config.ready_timeout)
        self.stub = worker_pb2_grpc.EngineWorkerServiceStub(self._channel)

    async def _pump_events(self) -> None:
        """Hands every event to the core: each instance's in order, different instances'
        at the same time (sessions/key_order.py). One event that fails is logged and
        counted; it never stops the events of the other instances behind it."""
        assert self.stub is not None
        order = KeyOrder()
        try:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for message in self.stub.StreamEvents(pb.StreamEventsRequest()):
                    try:
                        event = wire.decode(message.event_json)
                    except Exception:
                        self._failed(message)
                        continue
                    await order.submit(event.key, partial(self._handle, message, event))
            await order.drain()  # the stream ended: its last events are handled before this
        finally:
            await order.cancel()  # only when the pump itself is cancelled is any left

    async def _handle(self, message: pb.StreamEventsResponse, event: EngineEvent) -> None:
        try:
            await self.pool.on_event(message.run_id, event)
        except Exception:
            self._failed(message)

    def _failed(self, message: pb.StreamEventsResponse) -> None:
        self.pool.failures += 1
        log.exception(
            "engine worker %d: an event could not be handled (%s)",
            self.index,
            message.event_json[:200],
        )

    async def _ping_loop(self) -> None:
        """A worker that stops answering (a wedged Go runtime) is killed; run() restarts it."""
        assert self.stub is not None
        assert self.process is not None
        misses = 0
        while misses < self.config.ping_failures_to_kill:
            await asyncio.sleep(self.config.ping_interval)
            try:
                await self.stub.Ping(pb.PingRequest(), timeout=self.config.ping_interval)
                misses = 0
            except grpc.aio.AioRpcError:
                misses += 1
        log.error("engine worker %d stopped answering; killing it", self.index)
        self.process.kill()

    async def close(self) -> None:
        self._closing.set()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()


class WorkerPool:
    def __init__(self, config: PoolConfig, on_event: OnEvent, on_worker_lost: OnWorkerLost) -> None:
        self.config = config
        self.on_event = on_event
        self.on_worker_lost = on_worker_lost
        self.slots = [WorkerSlot(i, config, self) for i in range(config.size)]
        self._placement: dict[InstanceKey, WorkerSlot] = {}
        self._runners: list[asyncio.Task[None]] = []
        self._reports: set[asyncio.Task[None]] = set()
        self.failures = 0  # events and reports that raised (a metric reads it)

    async def start(self) -> None:
        self.config.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._runners = [
            asyncio.create_task(slot.run(), name=f"worker {slot.index}") for slot in self.slots
        ]
        await asyncio.wait_for(
            asyncio.gather(*(slot.ready.wait() for slot in self.slots)), self.config.ready_timeout
        )

    async def close(self) -> None:
        await asyncio.gather(*(slot.close() for slot in self.slots))
        await asyncio.gather(*self._runners, return_exceptions=True)
        for report in list(self._reports):
            report.cancel()
        await asyncio.gather(*self._reports, return_exceptions=True)

    def report_lost(self, lost: list[LostRun]) -> None:
        """Tells the core of a dead worker's instances, in a task of its own."""
        if not lost:
            return
        task = asyncio.create_task(self._report(lost), name="worker lost")
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report(self, lost: list[LostRun]) -> None:
        try:
            await self.on_worker_lost(lost)
        except Exception:
            self.failures += 1
            log.exception("the core failed to take %d lost instances", len(lost))

    def _place(self, key: InstanceKey) -> WorkerSlot:
        slot = self._placement.get(key)
        if slot is None:
            slot = min(self.slots, key=lambda s: (len(s.keys), s.index))
            self._placement[key] = slot
        slot.keys.add(key)
        return slot

    def _release(self, key: InstanceKey) -> WorkerSlot | None:
        slot = self._placement.pop(key, None)
        if slot is not None:
            slot.keys.discard(key)
            slot.runs.pop(key, None)
        return slot

    async def _stub(self, slot: WorkerSlot) -> worker_pb2_grpc.EngineWorkerServiceAsyncStub:
        try:
            await asyncio.wait_for(slot.ready.wait(), self.config.ready_timeout)
        except TimeoutError:
            raise WorkerUnavailable(f"engine worker {slot.index} is not ready") from None
        assert slot.stub is not None
        return slot.stub

    async def start_instance(
        self, key: InstanceKey, runtime_dir: Path, proxy_url: str, run_id: int
    ) -> None:
        slot = self._place(key)
        await self._stub(slot)  # the worker is ready
        # From here the worker may host the run: if it dies, the run is reported lost.
        slot.runs[key] = run_id
        request = pb.StartInstanceRequest(
            key=key, runtime_dir=str(runtime_dir), proxy_url=proxy_url, run_id=run_id
        )
        result = await slot.starts.submit(request)
        if result.HasField("error"):
            raise from_wire(result.error)

    async def stop_instance(self, key: InstanceKey) -> None:
        slot = self._release(key)
        if slot is not None and slot.ready.is_set():
            await _call((await self._stub(slot)).StopInstance(pb.StopInstanceRequest(key=key)))

    async def logout_instance(self, key: InstanceKey) -> None:
        slot = self._release(key)
        if slot is not None and slot.ready.is_set():
            request = pb.LogoutInstanceRequest(key=key)
            await _call((await self._stub(slot)).LogoutInstance(request))

    async def pair_phone(self, key: InstanceKey, phone: str) -> PairCode:
        slot = self._hosting(key)
        reply = await _call(
            (await self._stub(slot)).PairPhone(pb.PairPhoneRequest(key=key, phone=phone))
        )
        return PairCode(reply.code, reply.lifetime_seconds)

    async def send(
        self, key: InstanceKey, recipient_jid: str, content: OutgoingContent
    ) -> SendResult:
        slot = self._hosting(key)
        request = pb.SendRequest(
            key=key, recipient_jid=recipient_jid, content=wire.content_to_proto(content)
        )
        reply = await _call((await self._stub(slot)).Send(request))
        return SendResult(reply.message_id, reply.timestamp)

    async def set_typing(self, key: InstanceKey, recipient_jid: str, typing: bool) -> None:
        slot = self._hosting(key)
        request = pb.SetTypingRequest(key=key, recipient_jid=recipient_jid, typing=typing)
        await _call((await self._stub(slot)).SetTyping(request))

    async def mark_read(
        self, key: InstanceKey, chat_jid: str, sender_jid: str, message_ids: list[str]
    ) -> None:
        slot = self._hosting(key)
        request = pb.MarkReadRequest(
            key=key, chat_jid=chat_jid, sender_jid=sender_jid, message_ids=message_ids
        )
        await _call((await self._stub(slot)).MarkRead(request))

    async def send_presence(self, key: InstanceKey, chat_jid: str, presence: str) -> None:
        slot = self._hosting(key)
        request = pb.SendPresenceRequest(key=key, chat_jid=chat_jid, presence=presence)
        await _call((await self._stub(slot)).SendPresence(request))

    async def reject_call(self, key: InstanceKey, caller_jid: str, call_id: str) -> None:
        slot = self._hosting(key)
        request = pb.RejectCallRequest(key=key, caller_jid=caller_jid, call_id=call_id)
        await _call((await self._stub(slot)).RejectCall(request))

    async def download_media(self, key: InstanceKey, media_ref: str) -> bytes:
        slot = self._hosting(key)
        stream = (await self._stub(slot)).DownloadMedia(
            pb.DownloadMediaRequest(key=key, media_ref=media_ref)
        )

        async def read_all() -> bytes:
            return b"".join([chunk.data async for chunk in stream])

        return await _call(read_all())

    async def contacts(self, key: InstanceKey) -> list[Contact]:
        slot = self._hosting(key)
        reply = await _call((await self._stub(slot)).ListContacts(pb.ListContactsRequest(key=key)))
        return [wire.contact_from_proto(c) for c in reply.contacts]

    async def check_numbers(self, key: InstanceKey, phones: list[str]) -> list[NumberCheck]:
        slot = self._hosting(key)
        request = pb.CheckNumbersRequest(key=key, phones=phones)
        reply = await _call((await self._stub(slot)).CheckNumbers(request))
        return [wire.check_from_proto(c) for c in reply.results]

    async def group_call(
        self, key: InstanceKey, method: str, data: bytes = b"", **args: object
    ) -> str:
        """One group call of the Engine interface (sessions/groups.py); its result as JSON.
        `data` is the call's one binary argument, if it has one."""
        slot = self._hosting(key)
        request = pb.GroupCallRequest(key=key, method=method, args_json=json.dumps(args), data=data)
        reply = await _call((await self._stub(slot)).GroupCall(request))
        return reply.result_json

    async def resolve_jids(self, key: InstanceKey, jids: list[str]) -> list[str]:
        slot = self._hosting(key)
        request = pb.ResolveJidsRequest(key=key, jids=jids)
        reply = await _call((await self._stub(slot)).ResolveJids(request))
        return list(reply.alternates)

    def _hosting(self, key: InstanceKey) -> WorkerSlot:
        slot = self._placement.get(key)
        if slot is None:
            raise NotRunning("the instance is not running; call Connect first")
        return slot

    async def simulate(self, request: pb.SimulateRequest) -> None:
        slot = self._hosting(request.key)
        await _call((await self._stub(slot)).Simulate(request))


async def _call(call: Awaitable[R]) -> R:
    """Awaits a call into a worker; its failure as the engine's own error type."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise _engine_error(error) from None


def _engine_error(error: grpc.aio.AioRpcError) -> EngineError:
    if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
        # grpc-stubs types metadata items as objects; they are (key, value) pairs.
        trailers: Any = error.trailing_metadata() or ()
        detail = next((v for k, v in trailers if k == ERROR_DETAIL_KEY), None)
        if isinstance(detail, bytes):
            return from_wire(pb.EngineErrorDetail.FromString(detail))
        return EngineError(error.details() or "the engine failed")
    # The call had left for the worker: a send may have gone out.
    return WorkerUnavailable(f"engine worker call failed: {error.code().name}", in_flight=True)
