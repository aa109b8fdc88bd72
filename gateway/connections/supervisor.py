"""The instance supervisor: owns every instance's connection state machine, persists each
transition with a typed reason, reconnects with backoff (or at once, on request), and feeds
Connect streams.

    DISCONNECTED -> CONNECTING -> PAIRING -> CONNECTED
    LOGGED_OUT (store wiped, never retried) · BANNED (until expiry) · ERROR (needs a person)

Engines run in worker processes (sessions.pool); their events arrive in `on_event`, tagged
with the run they belong to. Whether an event (or a worker's death) concerns the current
run is decided under the instance's lock, so an event of a run that was just halted can
never act on the next one. Every transition commits with its event."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.connections.backoff import Backoff
from zapgate.gateway.connections.engines import instance_dir
from zapgate.gateway.connections.session_keeper import SessionKeeper
from zapgate.gateway.connections.updates import (
    FinalUpdate,
    PairCodeUpdate,
    QrUpdate,
    StateUpdate,
    Update,
    Watchers,
)
from zapgate.gateway.events.groups import to_proto as group_event
from zapgate.gateway.events.history import HistoryImport
from zapgate.gateway.events.inbox import Inbox
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.presence import (
    chat_presence_to_proto,
    presence_to_proto,
)
from zapgate.gateway.ops.logs import about_instance, instance_fields
from zapgate.gateway.rpc.errors import InstanceBanned, InstanceNotPaired, Unavailable
from zapgate.gateway.store.fencing import NO_FENCING, Fenced, Fencing
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.tasks import TaskSet
from zapgate.sessions import events as ev
from zapgate.sessions.errors import EngineError
from zapgate.sessions.pool import LostRun, WorkerPool
from zapgate.sessions.thread_batch import ThreadBatch
from zapgate.sessions.vault import Undecryptable
from zapgate.v1 import event_pb2
from zapgate.v1 import instance_pb2 as pb

log = logging.getLogger(__name__)

S = pb.InstanceState
R = pb.StateReason
# whatsmeow's ConnectFailure codes that mean the session is gone for good.
LOGGED_OUT_CODES = {401, 403, 406}
CLIENT_OUTDATED_CODE = 405


class Listener(Protocol):
    """Told of every persisted transition, every receipt and every inbound message (the
    send dispatcher, the contact book)."""

    async def state_changed(self, record: InstanceRecord) -> None: ...

    async def on_receipt(
        self,
        instance_key: str,
        message_ids: tuple[str, ...],
        kind: str,
        receipt_from: tuple[str, str] = ("", ""),
    ) -> None: ...


class Calls(Protocol):
    """Told of every incoming call (gateway/events/calls.py: rejects, answers, logs it)."""

    async def received(self, tenant: str, instance_id: str, call: ev.CallReceived) -> None: ...


class TransitionObserver(Protocol):
    """Told of every persisted transition (gateway/ops/metrics.py)."""

    def transitioned(self, state: int, reason: int) -> None: ...


class NoTransitionObserver:
    def transitioned(self, state: int, reason: int) -> None:
        pass


@dataclass
class Live:
    """What the supervisor knows of one instance beyond its stored record."""

    tenant: str
    instance_id: str
    run_id: int = 0  # the engine run in progress; 0 when none
    attempt: int = 0  # consecutive failed connects, for the backoff
    connected_at: float | None = None
    retry: asyncio.TimerHandle | None = None
    pair_phone: str = ""
    watchers: Watchers = field(default_factory=Watchers)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.instance_id}"


class Supervisor:
    def __init__(
        self,
        instances: InstanceRepository,
        pool: WorkerPool,
        keeper: SessionKeeper,
        runtime_dir: Path,
        backoff: Backoff,
        *,
        listener: Listener,
        events: EventLog,
        inbox: Inbox,
        calls: Calls,
        history: HistoryImport,
        observer: TransitionObserver | None = None,
        fencing: Fencing = NO_FENCING,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        micros: MicrosClock = system_micros,
    ) -> None:
        self._listener = listener
        self._inbox = inbox
        self._calls = calls
        self._history = history
        self._events = events
        self._observer = observer or NoTransitionObserver()
        self._fencing = fencing  # cluster mode: owner-only writes check the lease
        self._instances = instances
        self._pool = pool
        self._keeper = keeper
        self._runtime_dir = runtime_dir
        self._backoff = backoff
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)
        self._monotonic = monotonic
        self._micros = micros
        self._lives: dict[str, Live] = {}
        self._run_ids = itertools.count(int(micros()))
        self._tasks = TaskSet("supervisor")
        self._closing = False
        self._dirs = ThreadBatch()  # the runtime dirs of many starts, in one hand-off

    # ---- public operations -------------------------------------------------------------

    async def recover(self) -> None:
        """After a start: reconnect every paired instance that should be connected (its
        session is restored from its snapshot when the runtime dir lost it); re-arm bans."""
        # Said in one statement before serving, so no client reads a state a crashed run
        # left behind (CONNECTED with no connection).
        await self._instances.mark_reconnecting(
            S.INSTANCE_STATE_CONNECTING,
            R.STATE_REASON_RECONNECTING,
            unpaired_state=S.INSTANCE_STATE_DISCONNECTED,
            unpaired_reason=R.STATE_REASON_PAIRING_ABANDONED,
            event_of=lambda record: self._state_row(
                record.tenant, record.id, record.state, record.state_reason, ""
            ),
        )
        self._events.committed()
        for record in await self._instances.list_wanting_connection():
            self._resume(record, recovering=True)

    def _resume(self, record: InstanceRecord, *, recovering: bool = False) -> None:
        """Reconnects an instance that should be connected (its ban re-armed)."""
        live = self._live(record.tenant, record.id)
        with about_instance(record.tenant, record.id):  # for the task and timer's logs
            if record.state == S.INSTANCE_STATE_BANNED:
                delay = max(0.0, (record.ban_expire_us - self._micros()) / 1e6)
                self._schedule(live, delay)
            else:
                start = self._start(live, R.STATE_REASON_RECONNECTING, recovering=recovering)
                self._tasks.spawn(start)

    # ---- cluster mode: the node acquired or lost an instance's lease -------------------

    async def adopt(self, tenant: str, instance_id: str) -> None:
        """This node now owns the instance: reconnect it if it should be connected, from
        its encrypted snapshot (the node's runtime dir holds no store of it)."""
        record = await self._instances.get(tenant, instance_id)
        if record is not None and record.want_connected and not self._closing:
            self._resume(record)

    async def release(self, tenant: str, instance_id: str) -> None:
        """This node lost the instance's lease: stop its connection at once, without
        writing anything (the new owner does), and drop its local store, so a later
        adoption restores the new owner's snapshot instead of this stale copy."""
        live = self._lives.pop(f"{tenant}/{instance_id}", None)
        self._keeper.unwatch(tenant, instance_id)
        if live is not None:
            # At once, even while a write of it holds the lock waiting for a database this
            # node may not reach any more; then again under the lock, for what that write
            # may have started meanwhile.
            with contextlib.suppress(EngineError):
                await self._pool.stop_instance(live.key)
            async with live.lock:
                await self._halt(live)
        await asyncio.to_thread(shutil.rmtree, self.runtime_dir_of(tenant, instance_id), True)
        if live is not None and live.watchers:
            # Connect streams here end (last: the store may be what this node lost).
            record = await self._instances.get(tenant, instance_id)
            if record is not None:
                live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_ERROR, record))

    def movable(self, tenant: str, instance_id: str) -> bool:
        """Cluster mode: connected here and nobody watching a Connect stream of it, so a
        hand-over costs it one short disconnect and breaks nothing under way."""
        live = self._lives.get(f"{tenant}/{instance_id}")
        return (
            live is not None
            and bool(live.run_id)
            and live.connected_at is not None
            and not live.watchers
            and not self._closing
        )

    async def hand_over(self, tenant: str, instance_id: str, detail: str) -> None:
        """Cluster mode, under the lease still: stops the connection, writes the session's
        final snapshot and the CONNECTING (HANDED_OVER) state, and drops the local store.
        The node then releases the lease for the node that connects it next (no QR).
        Raises Fenced when the lease was lost meanwhile (the node drops the instance)."""
        live = self._lives.pop(f"{tenant}/{instance_id}", None)
        if live is None:
            return
        try:
            async with live.lock:
                await self._halt(live)
                await self._keeper.snapshot(tenant, instance_id)  # the store is final now
                self._keeper.unwatch(tenant, instance_id)
                record = await self._set_state(
                    live, S.INSTANCE_STATE_CONNECTING, R.STATE_REASON_HANDED_OVER, detail
                )
        finally:
            self._keeper.unwatch(tenant, instance_id)
            await asyncio.to_thread(shutil.rmtree, self.runtime_dir_of(tenant, instance_id), True)
        live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_ERROR, record))

    async def connect(self, tenant: str, instance_id: str, phone: str) -> AsyncIterator[Update]:
        record = await self._instances.require(tenant, instance_id)
        await self._fencing.ensure_owner(tenant, instance_id, place=True)
        live = self._live(tenant, instance_id)
        if record.state == S.INSTANCE_STATE_CONNECTED and live.run_id:
            yield FinalUpdate(pb.CONNECT_OUTCOME_CONNECTED, record)
            return
        if record.state == S.INSTANCE_STATE_BANNED and record.ban_expire_us > self._micros():
            yield FinalUpdate(pb.CONNECT_OUTCOME_BANNED, record)
            return
        queue = live.watchers.join()
        try:
            if phone:
                live.pair_phone = phone
                if live.watchers.qr is not None and live.watchers.pair_code is None:
                    self._tasks.spawn(self._request_pair_code(live, live.run_id))
            if not live.run_id and live.retry is None:
                await self._start(live, R.STATE_REASON_CONNECT_REQUESTED)
            while True:
                update = await queue.get()
                yield update
                if isinstance(update, FinalUpdate):
                    return
        finally:
            live.watchers.leave(queue)
            if not live.watchers:
                self._tasks.spawn(self._abandon_pairing(live))

    async def logout(self, tenant: str, instance_id: str) -> InstanceRecord:
        record = await self._instances.require(tenant, instance_id)
        await self._fencing.ensure_owner(tenant, instance_id)
        live = self._live(tenant, instance_id)
        async with live.lock:
            await self._halt(live, logout=True)
            await self._wipe(record)
            await self._keeper.forget(tenant, instance_id)
            record = await self._set_state(
                live,
                S.INSTANCE_STATE_LOGGED_OUT,
                R.STATE_REASON_LOGOUT_REQUESTED,
                "",
                jid="",
                want_connected=False,
                keepalive_failing=False,
            )
        live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_LOGGED_OUT, record))
        return record

    async def reconnect(self, tenant: str, instance_id: str) -> InstanceRecord:
        """Drops the connection (and any pending retry) and dials again now with the saved
        session: CONNECTING (RECONNECT_REQUESTED), then CONNECTED as the engine reports it.
        Only for a paired instance outside a ban; decided under the instance's lock, so a
        concurrent logout, drop or ban is either before it or after it."""
        await self._instances.require(tenant, instance_id)
        await self._fencing.ensure_owner(tenant, instance_id, place=True)
        live = self._live(tenant, instance_id)
        async with live.lock:
            if self._closing:
                raise Unavailable("the gateway is shutting down; reconnect after its restart")
            record = await self._instances.require(tenant, instance_id)
            if not record.jid:
                raise InstanceNotPaired(
                    f"instance {instance_id!r} has no saved session to reconnect with"
                    f" ({S.Name(record.state).removeprefix('INSTANCE_STATE_').lower()});"  # type: ignore[arg-type]
                    " call Connect and pair it",
                    metadata={"instance_id": instance_id},
                )
            if record.state == S.INSTANCE_STATE_BANNED and record.ban_expire_us > self._micros():
                raise InstanceBanned(
                    f"instance {instance_id!r} is temporarily banned (code {record.ban_code});"
                    " it reconnects by itself when the ban ends",
                    metadata={"instance_id": instance_id},
                )
            log.info("reconnect of %s requested (was %s)", live.key, S.Name(record.state))  # type: ignore[arg-type]
            if live.run_id or live.retry is not None:
                await self._halt(live)
            live.attempt = 0  # asked for: no backoff carried over
            await self._start_locked(live, R.STATE_REASON_RECONNECT_REQUESTED)
        return await self._instances.require(tenant, instance_id)

    async def forget(self, record: InstanceRecord) -> None:
        """Before a delete: unlink the device, stop the connection, wipe the session."""
        await self._fencing.ensure_owner(record.tenant, record.id)
        live = self._lives.pop(record.key, None)
        if live is not None:
            async with live.lock:
                await self._halt(live, logout=True)
            final = FinalUpdate(pb.CONNECT_OUTCOME_ERROR, record)
            live.watchers.publish(final)
        await self._wipe(record)
        await self._keeper.forget(record.tenant, record.id)

    async def shutdown(self) -> None:
        """Stops every connection; stores stay, and `want_connected` brings them back on the
        next start."""
        self._closing = True
        for live in list(self._lives.values()):
            if live.retry is not None:
                live.retry.cancel()
                live.retry = None
            if live.run_id:
                async with live.lock:
                    await self._halt(live)
                    try:
                        record = await self._set_state(
                            live, S.INSTANCE_STATE_DISCONNECTED, R.STATE_REASON_SHUTDOWN, ""
                        )
                    except Fenced:  # cluster mode: another node owns it now; it says
                        continue
                live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_ERROR, record))
        await self._tasks.cancel()
        await self._keeper.snapshot_all()  # engines are stopped: the stores are final

    def runtime_dir_of(self, tenant: str, instance_id: str) -> Path:
        return instance_dir(self._runtime_dir, tenant, instance_id)

    # ---- engine events -----------------------------------------------------------------

    async def on_event(self, run_id: int, event: ev.EngineEvent) -> None:
        live = self._lives.get(event.key)
        if live is None:
            return
        async with live.lock:
            if live.run_id != run_id:  # decided under the lock: the run may just have ended
                log.debug("ignoring %s of an earlier run of %s", type(event).__name__, event.key)
                return
            try:
                await self._handle(live, event)
            except Fenced as fenced:  # the node drops the instance (Fencing.lost)
                log.warning("%s", fenced)

    async def on_worker_lost(self, lost: LostRun) -> None:
        """A worker died with this run on it: reconnect on the restarted worker, unless the
        instance has moved on (stopped, or started again) meanwhile."""
        live = self._lives.get(lost.key)
        if live is None or live.run_id != lost.run_id:
            return
        # The store outlives the worker (tmpfs): secure its newest state first. A snapshot
        # that fails (the state store is down) must not keep the instance from coming back.
        try:
            await self._keeper.snapshot(live.tenant, live.instance_id)
        except Exception:
            log.exception("snapshot of %s after its worker died failed", live.key)
        async with live.lock:
            if live.run_id != lost.run_id:
                return
            live.run_id = 0
            try:
                await self._set_state(
                    live,
                    S.INSTANCE_STATE_CONNECTING,
                    R.STATE_REASON_WORKER_CRASHED,
                    "engine worker died",
                )
            except Fenced:  # cluster mode: the node drops the instance
                return
            self._schedule(live, self._backoff.delay(0, self._rng))

    async def _handle(self, live: Live, event: ev.EngineEvent) -> None:
        match event:
            case ev.QrShown(code=code, index=index, lifetime_seconds=lifetime):
                if index == 0:
                    await self._set_state(
                        live, S.INSTANCE_STATE_PAIRING, R.STATE_REASON_PAIRING_STARTED, ""
                    )
                expire = self._micros() + int(lifetime * 1e6)
                live.watchers.publish(QrUpdate(code, index, expire))
                if self._events is not None:
                    # Not the code itself: it carries the device's ADV secret, and the log
                    # is durable. Connect streams the code live.
                    qr = event_pb2.QrUpdated(index=index)
                    qr.expire_time.FromMicroseconds(expire)
                    await self._events.append(live.tenant, live.instance_id, qr)
                if live.pair_phone and live.watchers.pair_code is None:
                    self._tasks.spawn(self._request_pair_code(live, live.run_id))
            case ev.PairCodeShown(code=code, lifetime_seconds=lifetime):
                expire = self._micros() + int(lifetime * 1e6)
                live.watchers.publish(PairCodeUpdate(code, expire))
            case ev.Paired(jid=jid, phone=phone):
                await self._save(live, jid=jid, phone=phone, want_connected=True)
                self._keeper.watch(live.tenant, live.instance_id)
                self._tasks.spawn(self._keeper.snapshot(live.tenant, live.instance_id))
            case ev.Connected(jid=jid, phone=phone):
                was_pairing = live.watchers.qr is not None or live.watchers.pair_code is not None
                live.connected_at = self._monotonic()
                reason = R.STATE_REASON_PAIRED if was_pairing else R.STATE_REASON_CONNECTED
                changes: dict[str, Any] = {"jid": jid, "want_connected": True}
                if phone:
                    changes["phone"] = phone
                record = await self._set_state(
                    live, S.INSTANCE_STATE_CONNECTED, reason, "", keepalive_failing=False, **changes
                )
                live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_CONNECTED, record))
            case ev.Disconnected(detail=detail):
                await self._retry_later(live, R.STATE_REASON_CONNECTION_LOST, detail)
            case ev.ConnectFailed(detail=detail):
                await self._retry_later(live, R.STATE_REASON_CONNECT_FAILED, detail)
            case ev.ConnectRefused(code=code, detail=detail):
                await self._connect_refused(live, code, detail)
            case ev.LoggedOut(detail=detail):
                await self._logged_out(live, detail)
            case ev.StreamReplaced():
                await self._fail(
                    live, R.STATE_REASON_STREAM_REPLACED, "another client took over this session"
                )
            case ev.ClientOutdated():
                await self._fail(
                    live,
                    R.STATE_REASON_CLIENT_OUTDATED,
                    "WhatsApp rejected this client version; upgrade zapgate",
                )
            case ev.TemporarilyBanned(code=code, expires_in_seconds=seconds):
                await self._banned(live, code, seconds)
            case ev.QrTimedOut():
                await self._halt(live)
                record = await self._set_state(
                    live,
                    S.INSTANCE_STATE_DISCONNECTED,
                    R.STATE_REASON_QR_TIMEOUT,
                    "",
                    want_connected=False,
                )
                live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_QR_TIMEOUT, record))
            case ev.KeepAliveFailing(failures=failures):
                log.warning("keepalive failing on %s (%d in a row)", live.key, failures)
                await self._save(live, keepalive_failing=True)
            case ev.Receipt(message_ids=message_ids, kind=kind):
                by = (event.from_jid, event.from_lid)
                self._tasks.spawn(self._listener.on_receipt(live.key, message_ids, kind, by))
            case ev.MessageReceived():
                await self._inbox.received(live.tenant, live.instance_id, event)
            case ev.ReadElsewhere():
                await self._inbox.read_elsewhere(live.tenant, live.instance_id, event)
            case ev.GroupChanged():
                await self._events.append(live.tenant, live.instance_id, group_event(event))
            case ev.PresenceChanged():
                await self._events.append(live.tenant, live.instance_id, presence_to_proto(event))
            case ev.ChatPresenceChanged():
                payload = chat_presence_to_proto(event)
                await self._events.append(live.tenant, live.instance_id, payload)
            case ev.CallReceived():
                # Rejecting asks the engine: not on the path of the instance's other events.
                self._tasks.spawn(self._calls.received(live.tenant, live.instance_id, event))
            case ev.HistorySynced():
                # Imported in the background: a large sync must not hold up the events
                # after it (the importer keeps one instance's blobs in order).
                self._tasks.spawn(self._history.received(live.tenant, live.instance_id, event))
            case ev.KeepAliveRestored():
                log.info("keepalive restored on %s", live.key)
                await self._save(live, keepalive_failing=False)

    async def _connect_refused(self, live: Live, code: int, detail: str) -> None:
        if code in LOGGED_OUT_CODES:
            await self._logged_out(live, f"WhatsApp refused the session ({code}) {detail}")
        elif code == CLIENT_OUTDATED_CODE:
            await self._fail(live, R.STATE_REASON_CLIENT_OUTDATED, f"client outdated ({code})")
        else:
            await self._retry_later(
                live,
                R.STATE_REASON_CONNECT_FAILED,
                f"WhatsApp refused the connection ({code}) {detail}".strip(),
            )

    async def _logged_out(self, live: Live, detail: str) -> None:
        await self._halt(live)
        record = await self._instances.require(live.tenant, live.instance_id)
        await self._wipe(record)
        await self._keeper.forget(live.tenant, live.instance_id)
        record = await self._set_state(
            live,
            S.INSTANCE_STATE_LOGGED_OUT,
            R.STATE_REASON_LOGGED_OUT_FROM_PHONE,
            detail,
            jid="",
            want_connected=False,
            keepalive_failing=False,
        )
        live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_LOGGED_OUT, record))

    async def _fail(self, live: Live, reason: int, detail: str) -> None:
        """A state that needs a person: no automatic reconnect, now or after a restart."""
        await self._halt(live)
        record = await self._set_state(
            live, S.INSTANCE_STATE_ERROR, reason, detail, want_connected=False
        )
        live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_ERROR, record))

    async def _banned(self, live: Live, code: int, seconds: float) -> None:
        await self._halt(live)
        record = await self._set_state(
            live,
            S.INSTANCE_STATE_BANNED,
            R.STATE_REASON_TEMPORARY_BAN,
            f"temporary ban {code}",
            ban_code=code,
            ban_expire_us=self._micros() + int(seconds * 1e6),
            want_connected=True,
        )
        live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_BANNED, record))
        self._schedule(live, seconds)

    async def _retry_later(self, live: Live, reason: int, detail: str) -> None:
        """The connection is gone but the session is fine: reconnect after a backoff."""
        live.run_id = 0
        if live.connected_at is not None:
            if self._monotonic() - live.connected_at >= self._backoff.stable_after_seconds:
                live.attempt = 0
            live.connected_at = None
        delay = self._backoff.delay(live.attempt, self._rng)
        live.attempt += 1
        detail = f"{detail} (retry {live.attempt} in {delay:.1f}s)".strip()
        await self._set_state(live, S.INSTANCE_STATE_CONNECTING, reason, detail)
        self._schedule(live, delay)

    # ---- running and stopping ----------------------------------------------------------

    async def _start(self, live: Live, reason: int, *, recovering: bool = False) -> None:
        async with live.lock:
            try:
                await self._start_locked(live, reason, recovering=recovering)
            except Fenced as fenced:  # the node drops the instance (Fencing.lost)
                log.warning("%s", fenced)

    async def _start_locked(self, live: Live, reason: int, *, recovering: bool = False) -> None:
        """Starts an engine run (under the instance's lock), unless one is running.
        `recovering`: the start of `recover`, which already committed CONNECTING."""
        if live.run_id or self._closing:
            return
        if self._lives.get(live.key) is not live:  # released (cluster) or forgotten meanwhile
            return
        record = await self._instances.require(live.tenant, live.instance_id)
        if not record.jid and not live.watchers and reason == R.STATE_REASON_RECONNECTING:
            # A retry of a pairing nobody watches any more: nobody would scan its QR.
            await self._stop_pairing(live)
            return
        if not await self._restore(live, record):
            return
        live.run_id = next(self._run_ids)
        connecting: dict[str, Any] = {
            "state": S.INSTANCE_STATE_CONNECTING,
            "state_reason": reason,
            "state_detail": "",
            "want_connected": True,
            "ban_code": 0,
            "ban_expire_us": 0,
            "keepalive_failing": False,  # a new connection has failed no keepalive yet
        }
        if recovering and _holds(record, connecting):
            # `recover` committed this very state and its event for every instance in one
            # statement: writing it again would only log a duplicate event.
            await self._tell(live, record)
        else:
            state, reason, detail = (connecting.pop(k) for k in STATE_FIELDS)
            await self._set_state(live, state, reason, detail, **connecting)
        runtime_dir = self.runtime_dir_of(live.tenant, live.instance_id)
        await self._dirs.run(partial(_make_private_dir, runtime_dir))
        try:
            await self._pool.start_instance(live.key, runtime_dir, record.proxy_url, live.run_id)
        except EngineError as error:
            await self._retry_later(live, R.STATE_REASON_ENGINE_ERROR, str(error))

    async def _restore(self, live: Live, record: InstanceRecord) -> bool:
        """Puts the session store in place from its snapshot. False when the instance must
        not start: its snapshot is undecryptable, or its session is lost and nobody is
        there to pair again."""
        try:
            restored = await self._keeper.restore(
                live.tenant, live.instance_id, record.session_generation
            )
        except Undecryptable as error:
            failure = str(error)
        else:
            failure = ""
        if failure:
            log.error("session of %s is undecryptable: %s", live.key, failure)
            record = await self._set_state(
                live, S.INSTANCE_STATE_ERROR, R.STATE_REASON_SESSION_UNDECRYPTABLE, failure
            )
            live.watchers.publish(FinalUpdate(pb.CONNECT_OUTCOME_ERROR, record))
            return False
        if record.jid and not restored:
            log.warning("session of %s is lost (no store, no snapshot)", live.key)
            await self._save(live, jid="")
            if not live.watchers:
                await self._set_state(
                    live,
                    S.INSTANCE_STATE_DISCONNECTED,
                    R.STATE_REASON_SESSION_LOST,
                    "pair again",
                    want_connected=False,
                )
                return False
        if restored:
            self._keeper.watch(live.tenant, live.instance_id)
        return True

    async def _halt(self, live: Live, *, logout: bool = False) -> None:
        """Ends the engine run (if any) and any pending retry."""
        if live.retry is not None:
            live.retry.cancel()
            live.retry = None
        live.connected_at = None
        live.attempt = 0
        try:
            if logout:
                await self._pool.logout_instance(live.key)
            else:
                await self._pool.stop_instance(live.key)
        except EngineError as error:
            log.warning("could not stop %s cleanly: %s", live.key, error)
        live.run_id = 0

    async def _abandon_pairing(self, live: Live) -> None:
        """Nobody is left to show the QR code to: stop an instance that was never paired."""
        async with live.lock:
            if live.watchers or (not live.run_id and live.retry is None):
                return
            record = await self._instances.get(live.tenant, live.instance_id)
            if record is None or record.jid:
                return
            await self._stop_pairing(live)

    async def _stop_pairing(self, live: Live) -> None:
        """Ends the pairing of a never-paired instance (under its lock)."""
        await self._halt(live)
        live.watchers.qr = live.watchers.pair_code = None
        live.pair_phone = ""
        await self._set_state(
            live,
            S.INSTANCE_STATE_DISCONNECTED,
            R.STATE_REASON_PAIRING_ABANDONED,
            "",
            want_connected=False,
        )

    async def _request_pair_code(self, live: Live, run_id: int) -> None:
        phone = live.pair_phone
        try:
            code = await self._pool.pair_phone(live.key, phone)
        except EngineError as error:
            log.warning("pair code for %s failed: %s", live.key, error)
            live.watchers.publish(
                StateUpdate(
                    S.INSTANCE_STATE_PAIRING,
                    R.STATE_REASON_ENGINE_ERROR,
                    f"pair code request failed: {error}",
                )
            )
            return
        if live.run_id == run_id:
            expire = self._micros() + int(code.lifetime_seconds * 1e6)
            live.watchers.publish(PairCodeUpdate(code.code, expire))

    def _schedule(self, live: Live, delay: float) -> None:
        if live.retry is not None:
            live.retry.cancel()

        def fire() -> None:
            live.retry = None
            self._tasks.spawn(self._start(live, R.STATE_REASON_RECONNECTING))

        live.retry = asyncio.get_running_loop().call_later(max(delay, 0.0), fire)

    # ---- persistence -------------------------------------------------------------------

    async def _set_state(
        self, live: Live, state: int, reason: int, detail: str, **changes: Any
    ) -> InstanceRecord:
        """Persists a transition with its event, in one transaction, then tells everyone."""
        detail = detail[:500]
        record = await self._fenced_update(
            live,
            {"state": state, "state_reason": reason, "state_detail": detail, **changes},
            events=[self._state_row(live.tenant, live.instance_id, state, reason, detail)],
        )
        self._events.committed()
        log.info(
            "%s -> %s (%s) %s",
            live.key,
            S.Name(state),  # type: ignore[arg-type]
            R.Name(reason),  # type: ignore[arg-type]
            detail,
            extra=instance_fields(live.tenant, live.instance_id),
        )
        self._observer.transitioned(state, reason)
        await self._tell(live, record)
        return record

    async def _tell(self, live: Live, record: InstanceRecord) -> None:
        """Connect streams and the listener learn the instance's (committed) state."""
        live.watchers.publish(StateUpdate(record.state, record.state_reason, record.state_detail))
        try:
            await self._listener.state_changed(record)
        except Exception:  # the connection's state machine must not stall on it
            log.exception("the send dispatcher failed to take %s's new state", live.key)

    def _state_row(
        self, tenant: str, instance_id: str, state: int, reason: int, detail: str
    ) -> dict[str, Any]:
        changed = event_pb2.StateChanged(state=state, reason=reason, detail=detail)  # type: ignore[arg-type]
        return self._events.row(tenant, instance_id, changed)

    async def _save(self, live: Live, **changes: Any) -> None:
        await self._fenced_update(live, changes)

    async def _fenced_update(
        self, live: Live, changes: dict[str, Any], events: list[dict[str, Any]] | None = None
    ) -> InstanceRecord:
        """An owner-only write: in cluster mode it commits only under this node's lease."""
        try:
            fence = self._fencing.token(live.tenant, live.instance_id)
            return await self._instances.update(
                live.tenant, live.instance_id, changes, events=events or (), fence=fence
            )
        except Fenced:
            self._fencing.lost(live.tenant, live.instance_id)
            raise

    async def _wipe(self, record: InstanceRecord) -> None:
        path = self.runtime_dir_of(record.tenant, record.id)
        await asyncio.to_thread(shutil.rmtree, path, True)

    def _live(self, tenant: str, instance_id: str) -> Live:
        key = f"{tenant}/{instance_id}"
        live = self._lives.get(key)
        if live is None:
            live = self._lives[key] = Live(tenant, instance_id)
        return live


STATE_FIELDS = ("state", "state_reason", "state_detail")


def _holds(record: InstanceRecord, values: dict[str, Any]) -> bool:
    """The stored record already has every one of these values."""
    return all(getattr(record, name) == value for name, value in values.items())


def _make_private_dir(path: Path) -> None:
    # <runtime>/instances/<tenant>/<id>: every level 0700, not only the last (mkdir's
    # parents get 0755), including levels an older version created
    path.parents[2].mkdir(parents=True, exist_ok=True, mode=0o700)
    for level in (path.parents[1], path.parent, path):
        level.mkdir(exist_ok=True, mode=0o700)
        level.chmod(0o700)
