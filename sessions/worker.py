"""An engine worker process: hosts many instances of one engine and serves the internal
EngineWorkerService on a unix socket to the core. Started by the core as a fresh
interpreter (never forked: gRPC and Go runtimes do not survive a fork):

    python -m zapgate.sessions.worker --socket PATH --engine sim|neonize [--sim-timings JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from zapgate.engine.v1 import worker_pb2 as pb
from zapgate.engine.v1 import worker_pb2_grpc
from zapgate.sessions import groups, wire
from zapgate.sessions.core_watch import CoreWatch
from zapgate.sessions.engine import GRPC_MESSAGE_OPTIONS, Engine, InstanceSpec
from zapgate.sessions.errors import EngineError, to_wire
from zapgate.sessions.events import Disconnected, EngineEvent, HistorySynced, MessageReceived
from zapgate.sessions.log_lines import formatter_for, install
from zapgate.sessions.runloop import run_async
from zapgate.sessions.sim_engine import SimEngine, SimTimings
from zapgate.sessions.simwa_client import Labels, SimServer

log = logging.getLogger("zapgate.worker")

# Trailing metadata of a failed call: an EngineErrorDetail (binary: the key ends in -bin).
ERROR_DETAIL_KEY = "zapgate-engine-error-bin"
MEDIA_CHUNK_BYTES = 256 * 1024
# The Engine methods GroupCall may call (sessions/groups.py).
GROUP_CALLS = frozenset(
    {
        "list_groups",
        "group_info",
        "create_group",
        "update_participants",
        "set_group_name",
        "set_group_topic",
        "set_group_settings",
        "set_group_photo",
        "join_requests",
        "invite_link",
        "preview_invite",
        "join_group",
        "leave_group",
    }
)
Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


class WorkerService(worker_pb2_grpc.EngineWorkerServiceServicer):
    def __init__(
        self,
        engine_kind: str,
        sim_timings: SimTimings,
        sim_server: SimServer | None = None,
        core_watch: CoreWatch | None = None,
    ) -> None:
        self.engine: Engine = _build_engine(engine_kind, self._on_event, sim_timings, sim_server)
        self._runs: dict[str, int] = {}
        self._events: asyncio.Queue[pb.StreamEventsResponse] = asyncio.Queue()
        self._core_watch = core_watch

    async def stop_every_connection(self) -> int:
        """Stops every hosted instance and reports each as Disconnected to the core (which
        reconnects those it still owns); returns how many it stopped."""
        runs, self._runs = self._runs, {}
        for key, run_id in runs.items():
            try:
                await self.engine.stop(key)
            except Exception:  # it is stopped as far as this worker can tell
                log.exception("stopping %s for a silent core failed", key)
            detail = "the engine worker stopped it: its core stopped answering"
            event = Disconnected(key, detail)
            self._events.put_nowait(
                pb.StreamEventsResponse(run_id=run_id, event_json=wire.encode(event))
            )
        return len(runs)

    def _on_event(self, event: EngineEvent) -> None:
        run_id = self._runs.get(event.key)
        if run_id is None:
            return  # a late event of a stopped instance
        self._events.put_nowait(
            pb.StreamEventsResponse(run_id=run_id, event_json=wire.encode(event))
        )

    async def StartInstance(
        self, request: pb.StartInstanceRequest, context: Context
    ) -> pb.StartInstanceResponse:
        self._runs[request.key] = request.run_id
        spec = InstanceSpec(request.key, Path(request.runtime_dir), request.proxy_url)
        await _engine_call(context, self.engine.start(spec))
        return pb.StartInstanceResponse()

    async def StartInstances(
        self, request: pb.StartInstancesRequest, context: Context
    ) -> pb.StartInstancesResponse:
        """Each start on its own: one that fails says why in its result, the others run."""
        results = await asyncio.gather(*(self._start_one(start) for start in request.instances))
        return pb.StartInstancesResponse(results=results)

    async def _start_one(self, request: pb.StartInstanceRequest) -> pb.StartResult:
        self._runs[request.key] = request.run_id
        spec = InstanceSpec(request.key, Path(request.runtime_dir), request.proxy_url)
        try:
            await self.engine.start(spec)
        except EngineError as error:
            return pb.StartResult(error=to_wire(error))
        return pb.StartResult()

    async def StopInstance(
        self, request: pb.StopInstanceRequest, context: Context
    ) -> pb.StopInstanceResponse:
        self._runs.pop(request.key, None)
        await _engine_call(context, self.engine.stop(request.key))
        return pb.StopInstanceResponse()

    async def LogoutInstance(
        self, request: pb.LogoutInstanceRequest, context: Context
    ) -> pb.LogoutInstanceResponse:
        self._runs.pop(request.key, None)
        await _engine_call(context, self.engine.logout(request.key))
        return pb.LogoutInstanceResponse()

    async def PairPhone(
        self, request: pb.PairPhoneRequest, context: Context
    ) -> pb.PairPhoneResponse:
        code = await _engine_call(context, self.engine.pair_phone(request.key, request.phone))
        return pb.PairPhoneResponse(code=code.code, lifetime_seconds=code.lifetime_seconds)

    async def Send(self, request: pb.SendRequest, context: Context) -> pb.SendResponse:
        content = wire.content_from_proto(request.content)
        result = await _engine_call(
            context, self.engine.send(request.key, request.recipient_jid, content)
        )
        return pb.SendResponse(message_id=result.message_id, timestamp=result.timestamp)

    async def SetTyping(
        self, request: pb.SetTypingRequest, context: Context
    ) -> pb.SetTypingResponse:
        await _engine_call(
            context, self.engine.set_typing(request.key, request.recipient_jid, request.typing)
        )
        return pb.SetTypingResponse()

    async def MarkRead(self, request: pb.MarkReadRequest, context: Context) -> pb.MarkReadResponse:
        ids = list(request.message_ids)
        await _engine_call(
            context, self.engine.mark_read(request.key, request.chat_jid, request.sender_jid, ids)
        )
        return pb.MarkReadResponse()

    async def SendPresence(
        self, request: pb.SendPresenceRequest, context: Context
    ) -> pb.SendPresenceResponse:
        await _engine_call(
            context, self.engine.send_presence(request.key, request.chat_jid, request.presence)
        )
        return pb.SendPresenceResponse()

    async def RejectCall(
        self, request: pb.RejectCallRequest, context: Context
    ) -> pb.RejectCallResponse:
        await _engine_call(
            context, self.engine.reject_call(request.key, request.caller_jid, request.call_id)
        )
        return pb.RejectCallResponse()

    async def DownloadMedia(
        self, request: pb.DownloadMediaRequest, context: Context
    ) -> AsyncIterator[pb.DownloadMediaResponse]:
        data = await _engine_call(
            context, self.engine.download_media(request.key, request.media_ref)
        )
        view = memoryview(data)
        for start in range(0, max(len(data), 1), MEDIA_CHUNK_BYTES):
            yield pb.DownloadMediaResponse(data=bytes(view[start : start + MEDIA_CHUNK_BYTES]))

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: Context
    ) -> pb.ListContactsResponse:
        contacts = await _engine_call(context, self.engine.contacts(request.key))
        return pb.ListContactsResponse(contacts=[wire.contact_to_proto(c) for c in contacts])

    async def CheckNumbers(
        self, request: pb.CheckNumbersRequest, context: Context
    ) -> pb.CheckNumbersResponse:
        checks = await _engine_call(
            context, self.engine.check_numbers(request.key, list(request.phones))
        )
        return pb.CheckNumbersResponse(results=[wire.check_to_proto(c) for c in checks])

    async def GroupCall(
        self, request: pb.GroupCallRequest, context: Context
    ) -> pb.GroupCallResponse:
        if request.method not in GROUP_CALLS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown group call")
        args = json.loads(request.args_json or "{}")
        if request.data:
            args["data"] = request.data
        call = getattr(self.engine, request.method)(request.key, **args)
        result = await _engine_call(context, call)
        return pb.GroupCallResponse(result_json=groups.encode(result))

    async def ResolveJids(
        self, request: pb.ResolveJidsRequest, context: Context
    ) -> pb.ResolveJidsResponse:
        alternates = await _engine_call(
            context, self.engine.resolve_jids(request.key, list(request.jids))
        )
        return pb.ResolveJidsResponse(alternates=alternates)

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: Context
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        while True:
            yield await self._events.get()

    async def Ping(self, request: pb.PingRequest, context: Context) -> pb.PingResponse:
        if self._core_watch is not None:
            self._core_watch.pinged()
        return pb.PingResponse(hosted=self.engine.hosted(), pid=os.getpid())

    async def Simulate(self, request: pb.SimulateRequest, context: Context) -> pb.SimulateResponse:
        if not isinstance(self.engine, SimEngine):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this worker runs no simulator")
        assert isinstance(self.engine, SimEngine)
        await _engine_call(context, _simulate(self.engine, request))
        return pb.SimulateResponse()


async def _simulate(sim: SimEngine, request: pb.SimulateRequest) -> None:
    key, action = request.key, request.WhichOneof("action")
    if action == "scan_qr":
        await sim.scan_qr(key, request.scan_qr.code, request.scan_qr.phone)
    elif action == "enter_pair_code":
        await sim.enter_pair_code(key, request.enter_pair_code.code)
    elif action == "drop_connection":
        await sim.drop_connection(key)
    elif action == "logout_from_phone":
        await sim.logout_from_phone(key)
    elif action == "temporary_ban":
        ban = request.temporary_ban
        await sim.temporary_ban(key, ban.code, ban.expires_in_seconds)
    elif action == "stream_replaced":
        await sim.stream_replaced(key)
    elif action == "keep_alive":
        await sim.set_keepalive(key, request.keep_alive.failing)
    elif action == "fail_sends":
        sim.fail_sends(key, list(request.fail_sends.phones), request.fail_sends.code)
    elif action == "inject_message":
        message = wire.decode(request.inject_message.event_json)
        if not isinstance(message, MessageReceived) or message.key != key:
            raise EngineError("inject_message carries no message for this instance")
        await sim.inject_message(message, request.inject_message.media_data)
    elif action == "inject_event":
        event = wire.decode(request.inject_event.event_json)
        if event.key != key or isinstance(event, MessageReceived):
            raise EngineError("inject_event carries no event for this instance")
        await sim.inject_event(event)
    elif action == "receipt":
        receipt = request.receipt
        await sim.send_receipt(key, list(receipt.message_ids), receipt.kind, receipt.chat_jid)
    elif action == "set_contacts":
        contacts = [wire.contact_from_proto(c) for c in request.set_contacts.contacts]
        await sim.set_contacts(key, contacts)
    elif action == "preload_history":
        synced = wire.decode(request.preload_history.event_json)
        if not isinstance(synced, HistorySynced) or synced.key != key:
            raise EngineError("preload_history carries no history of this instance")
        sim.preload_history(key, synced)
    elif action == "set_lid_mappings":
        sim.set_lid_mappings(key, dict(request.set_lid_mappings.lids))
    elif action == "set_registered":
        sim.set_registered(key, list(request.set_registered.phones))
    elif action == "group_action":
        await sim.group_action(key, json.loads(request.group_action.args_json))
    else:
        raise EngineError(f"unknown simulator action {action!r}")


async def _engine_call(context: Context, call: Awaitable[T]) -> T:
    """Awaits an engine call; an EngineError becomes FAILED_PRECONDITION carrying its typed
    detail (zapgate.engine.v1.EngineErrorDetail) for the core's pool to raise again."""
    try:
        return await call
    except EngineError as error:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            str(error),
            trailing_metadata=((ERROR_DETAIL_KEY, to_wire(error).SerializeToString()),),
        )


def _build_engine(
    kind: str, sink: Any, sim_timings: SimTimings, sim_server: SimServer | None
) -> Engine:
    if kind == "sim":
        return SimEngine(sink, sim_timings, sim_server)
    if kind == "neonize":
        from zapgate.sessions.neonize_engine import NeonizeEngine

        return NeonizeEngine(sink)
    raise SystemExit(f"unknown engine {kind!r}")


async def serve(
    socket_path: Path,
    engine_kind: str,
    sim_timings: SimTimings,
    sim_server: tuple[str, Labels] | None = None,
    core_silence_seconds: float = 0.0,
) -> None:
    # One channel to the simulated WhatsApp server for every instance of this worker.
    server_link = SimServer(*sim_server) if sim_server is not None else None
    watch = CoreWatch(core_silence_seconds) if core_silence_seconds > 0 else None
    service = WorkerService(engine_kind, sim_timings, server_link, watch)
    server = grpc.aio.server(options=GRPC_MESSAGE_OPTIONS)
    worker_pb2_grpc.add_EngineWorkerServiceServicer_to_server(service, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parent = os.getppid()
    watchers = [asyncio.create_task(_exit_with_parent(parent, stop))]
    if watch is not None:
        watchers.append(asyncio.create_task(watch.forever(service.stop_every_connection)))
    await stop.wait()
    for watcher in watchers:
        watcher.cancel()
    await service.engine.close()
    await server.stop(1)
    if server_link is not None:
        await server_link.close()


async def _exit_with_parent(parent: int, stop: asyncio.Event) -> None:
    """A worker must not outlive its core (e.g. after the core was killed with -9)."""
    while os.getppid() == parent:  # noqa: ASYNC110 (no event tells of a parent's death)
        await asyncio.sleep(0.5)
    log.warning("core process %d is gone; exiting", parent)
    stop.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="zapgate engine worker (started by the core)")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--engine", choices=["sim", "neonize"], required=True)
    parser.add_argument("--sim-timings", default="{}", help="JSON of SimTimings fields")
    parser.add_argument("--sim-server", default="", help="host:port of a simulated WhatsApp")
    parser.add_argument("--sim-node", default="", help="this node's label for that server")
    parser.add_argument("--sim-worker", default="", help="this worker's label for that server")
    parser.add_argument(
        "--core-silence-seconds",
        type=float,
        default=0.0,
        help="stop every connection when the core has not pinged for this long (0: never)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    # Files 0600, dirs 0700 (as `zapgate serve` sets it; gateway/ops/file_modes.py): the
    # engines' session stores and the simulator's phone must never be readable by others.
    os.umask(0o077)
    # The core's line format (sessions/log_lines.py); text lines name the worker.
    text_format = f"%(asctime)s %(levelname)s worker[{os.getpid()}] %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(args.log_format, text_format))
    install(handler, args.log_level)
    timings = SimTimings(**json.loads(args.sim_timings))
    args.socket.unlink(missing_ok=True)  # left by a worker that was killed
    sim_server = None
    if args.sim_server:
        worker = f"{args.sim_worker or 'worker'} pid {os.getpid()}"
        sim_server = (args.sim_server, Labels(args.sim_node, worker))
    run_async(serve(args.socket, args.engine, timings, sim_server, args.core_silence_seconds))


if __name__ == "__main__":
    main()
