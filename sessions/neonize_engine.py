"""The engine on real WhatsApp: neonize 0.5.2, the Python binding of Go's whatsmeow. This
module is its lifecycle (start, stop, logout, pairing by phone) and what the loop decides
about the events its sessions post. The rest, one job per module:

- neonize_session.py: one start of one instance (its client, connect thread, callbacks);
- neonize_reader.py: the gate and the call threads every neonize call runs under;
- neonize_messaging.py, neonize_group_ops.py: the engine's calls (sends, presence, media,
  contacts, LIDs; groups), each made of reader calls from neonize_calls.py;
- neonize_events.py, neonize_inbound.py, neonize_presence.py, neonize_groups.py,
  neonize_history.py, neonize_contacts.py, neonize_lids.py, neonize_send.py: pure mappings
  between neonize's protobufs and zapgate's types.

What neonize does underneath (goneonize/main.go, and checked offline against 0.5.2):

- One blocking Go call, `Neonize()`, runs a client's whole life. It opens the whatsmeow
  SQLite store named by `NewClient(name=...)` (DSN `file:<name>?_foreign_keys=on`, created
  and migrated on the spot), writes the client into three unlocked global maps, applies the
  proxy, dials, runs the QR loop, then delivers events until `Stop()` cancels it. The QR,
  login-status and event callbacks all arrive on the thread of that call.
  `NewClient.connect()` runs it on a helper thread and polls that thread from the caller, so
  every instance holds two threads: its own connect thread (never the default executor,
  docs/engine.md, hazard 2) and neonize's helper.
- A failed dial makes `Neonize()` return the Go error at once (docs/engine.md, hazard 7);
  the engine reports it as ConnectFailed and forgets the instance.
- whatsmeow's own auto-reconnect cannot be switched off through neonize (EnableAutoReconnect
  is not exported). After a drop it emits Disconnected and redials at once. The engine stops
  the client as soon as the event arrives: whatsmeow's Disconnect marks the disconnect as
  expected, which ends its reconnect loop (and closes a redial that already succeeded).
  The same goes for every other event that ends a session (`_ENDINGS`).
- `Stop()` disconnects, removes the client from the maps and cancels its context; `Neonize()`
  then returns. But whatsmeow holds a client's socket lock for its whole dial, and every call
  that looks at the socket (Disconnect, even IsConnected) waits for it; a dial through a proxy
  that accepts and never answers never ends. So nothing touches a client until its connect
  has settled (a QR code, an event, or the end of the call): calls find it "still
  connecting", and a stop waits for the settling. whatsmeow's own redials (right after a
  pairing, and after a drop until the engine's stop lands) take the same lock: a call or a
  stop that meets one waits for it, holding the gate, up to the OS's TCP connect timeout
  when the network silently drops packets.
- Some calls never return: once whatsmeow's QR channel ends without a pairing, neonize waits
  forever for a JID that will not come (FetchMe), and a client stopped while it shows QR codes
  waits forever for a QR channel whatsmeow never closes. Their threads are lost (daemon
  threads: they do not keep the worker from exiting); `lingering()` counts them. A worker
  whose count keeps growing should be recycled: a worker restart is recoverable by design.
- Sending (neonize_send.py builds the messages): whatsmeow's SendMessage blocks until the
  server acknowledges the message (or its own timeout), holding its call thread and a read
  hold on the gate; a start or stop waits for the sends already under way. Every whatsmeow
  call used to send checks for a client missing from neonize's maps and answers "client is
  nil" (an error, not a crash): the offline tests use that to reach the real calls.
- Inbound messages (neonize_inbound.py maps them) arrive on neonize's callback thread like
  every other event; a message the mapping cannot read is logged and dropped there, so it
  never ends the delivery of the rest. Downloads and number checks answer "client is nil"
  like sends, but the contact store and LID-map calls dereference the client without a
  check: the engine calls them only for a connected instance it hosts (an unknown client id
  would crash Go).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from itertools import count
from pathlib import Path
from typing import Any

from zapgate.sessions import neonize_calls, neonize_contacts, neonize_inbound
from zapgate.sessions.engine import EventSink, InstanceSpec, PairCode
from zapgate.sessions.errors import EngineError
from zapgate.sessions.events import (
    ClientOutdated,
    Connected,
    ConnectFailed,
    ConnectRefused,
    Disconnected,
    EngineEvent,
    InstanceKey,
    LoggedOut,
    MessageReceived,
    QrTimedOut,
    StreamReplaced,
    TemporarilyBanned,
)
from zapgate.sessions.gate import WriteLease
from zapgate.sessions.neonize_group_ops import NeonizeGroupOps
from zapgate.sessions.neonize_messaging import NeonizeMessaging
from zapgate.sessions.neonize_reader import CALL_THREADS
from zapgate.sessions.neonize_session import Session, make_neonize_threads_daemonic, store_name

log = logging.getLogger(__name__)

# Longest a connect holds the gate as a writer when neither a QR code, an event nor its end
# arrives first. Neonize() writes the Go maps before any network I/O: only opening (and, the
# first time, migrating) the store comes earlier, a few milliseconds on tmpfs. The dial
# after them can take long (a stalled DNS query takes 5 s, a dead proxy forever), and every
# other neonize call would wait that long.
START_SETTLE_SECONDS = 1.0
# How long the phone has to enter a pair code before WhatsApp drops the pairing attempt.
PAIR_CODE_LIFETIME_SECONDS = 160.0
# How long stop()/close() wait for a client's Go side to be stopped. A client still dialing is
# stopped when its dial ends; waiting for that would let one dead proxy hang the worker.
STOP_WAIT_SECONDS = 10.0

# Events after which whatsmeow's session is over or must not go on by itself: the engine
# forgets the instance and stops its client; zapgate's supervisor decides what comes next.
_ENDINGS = (
    QrTimedOut,
    Disconnected,
    ConnectFailed,
    ConnectRefused,
    LoggedOut,
    StreamReplaced,
    TemporarilyBanned,
    ClientOutdated,
)
_STORE_SUFFIXES = ("", "-journal", "-wal", "-shm")


class NeonizeEngine(NeonizeMessaging, NeonizeGroupOps):
    def __init__(
        self,
        sink: EventSink,
        *,
        settle_seconds: float = START_SETTLE_SECONDS,
        call_threads: int = CALL_THREADS,
    ) -> None:
        super().__init__(sink, call_threads=call_threads)
        make_neonize_threads_daemonic()
        self._settle_seconds = settle_seconds
        self._unstopped: dict[InstanceKey, Session] = {}  # forgotten, Go side not stopped
        self._running: set[Session] = set()  # Neonize() has not returned
        self._specs: dict[InstanceKey, InstanceSpec] = {}
        self._starts = count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self, spec: InstanceSpec) -> None:
        if self._closed:
            raise EngineError("the neonize engine is closed")
        if spec.key in self._sessions:
            return
        loop = asyncio.get_running_loop()
        session = Session(
            spec,
            store_name(spec),
            uuid=f"{spec.key}#{next(self._starts)}",
            previous=self._unstopped.get(spec.key),
            engine=self,
            loop=loop,
        )
        self._sessions[spec.key] = session
        self._specs[spec.key] = spec
        self._running.add(session)
        session.launch()

    async def stop(self, key: InstanceKey) -> None:
        if (session := self._sessions.get(key)) is not None:
            self._forget(session)
        if (unstopped := self._unstopped.get(key)) is not None:
            await self._await_stopped([unstopped])

    async def logout(self, key: InstanceKey) -> None:
        spec = self._specs.get(key)
        if spec is None:
            raise EngineError(f"{key} was never started by this engine: its store is unknown")
        refusal = ""
        self._presence.forget(key)
        session = self._sessions.get(key)
        if session is not None and await self.is_connected(key):
            try:
                await self._read(session, neonize_calls.unlink)
            except EngineError as error:
                refusal = str(error)
        await self.stop(key)
        await self._in_thread(_wipe_store, spec.store_path)
        if refusal:
            raise EngineError(
                f"the session of {key} is wiped here, but WhatsApp did not confirm the unlink "
                f"({refusal}); remove the device on the phone (Linked devices)"
            )

    async def pair_phone(self, key: InstanceKey, phone: str) -> PairCode:
        session = self._hosted(key)
        if not neonize_contacts.E164.fullmatch(phone):
            raise EngineError(f"{phone!r} is not an E.164 phone number (e.g. +5511999998888)")
        if session.qr_count == 0:
            # docs/engine.md, hazard 5: whatsmeow rejects PairPhone until its connection is up.
            raise EngineError(
                f"{key} has not shown its first QR code yet; request the pair code after it"
            )
        # The caller shows the code (the supervisor, like with the simulator): no event.
        code = await self._read(session, lambda client: str(client.PairPhone(phone[1:], True)))
        return PairCode(code, PAIR_CODE_LIFETIME_SECONDS)

    async def is_connected(self, key: InstanceKey) -> bool:
        """Whether the instance's websocket is up (False while it is still dialing): a
        cheap reader call."""
        session = self._sessions.get(key)
        if session is None:
            return False
        try:
            return await self._read(session, lambda client: bool(client.is_connected))
        except EngineError:
            return False

    def hosted(self) -> int:
        return len(self._sessions)

    def lingering(self) -> int:
        """neonize calls still running for clients this engine no longer hosts. Most end
        within moments; neonize never ends some (see the module doc)."""
        return sum(1 for session in self._running if self._sessions.get(session.key) is not session)

    async def close(self) -> None:
        self._closed = True
        for session in list(self._sessions.values()):
            self._forget(session)
        await self._await_stopped(list(self._unstopped.values()))
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_WAIT_SECONDS)
        self._calls.shutdown(wait=False)

    # -- on the event loop: what sessions report (they call these through the loop) ---------

    def session_event(self, session: Session, event: EngineEvent) -> None:
        if self._sessions.get(session.key) is not session:
            return  # stopped or restarted since: whoever asked already knows
        if isinstance(event, Connected):
            session.connected = True
        if not isinstance(event, _ENDINGS):
            self.sink(event)
            if isinstance(event, Connected) and self._presence.of(session.key):
                self._spawn(self._renew_presence(session.key))
            return
        self._forget(session)
        if isinstance(event, LoggedOut):
            self._presence.forget(session.key)
            self._spawn(self._wipe_then_report(session.spec, event))
        else:
            self.sink(event)

    def session_poll_vote(self, session: Session, event: MessageReceived, message: Any) -> None:
        """Decrypts a vote off neonize's callback thread (a Go call reading the poll's secret
        from the store), then reports it with the options chosen."""
        if self._sessions.get(session.key) is session:
            self._spawn(self._decrypt_vote(session, event, message))

    async def _decrypt_vote(self, session: Session, event: MessageReceived, message: Any) -> None:
        try:
            vote = await self._read(session, lambda client: client.decrypt_poll_vote(message))
        except EngineError as error:
            # A poll whose secret this device never saw (sent before it was linked): nothing
            # can read the vote.
            log.warning(
                "%s: dropped a poll vote that could not be decrypted: %s", session.key, error
            )
            return
        votes = neonize_inbound.poll_votes(vote)
        self.session_event(session, dataclasses.replace(event, poll_votes=votes))

    def session_settled(self, session: Session) -> None:
        self._stop_when_settled(session)

    def session_finished(self, session: Session, error: str | None) -> None:
        """`error` is None when the session was stopped before neonize was even called."""
        self._running.discard(session)
        if error is not None:
            self.session_event(session, session.ending(error))
        self._stop_when_settled(session)

    def _forget(self, session: Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        self._unstopped[session.key] = session
        session.stop_requested = True
        self._stop_when_settled(session)

    def _stop_when_settled(self, session: Session) -> None:
        if not session.stop_requested or session.stop_scheduled or not session.past_dial:
            return
        session.stop_scheduled = True
        if not session.ran:
            self._mark_stopped(session)
            return
        try:
            stopping = session.loop.run_in_executor(self._calls, self._stop_client, session)
        except RuntimeError:  # executor shut down: the worker is exiting anyway
            log.warning("%s: engine closed before its client could be stopped", session.uuid)
            return
        stopping.add_done_callback(lambda _: self._mark_stopped(session))

    def _stop_client(self, session: Session) -> None:
        with self._gate.writing():
            session.torn_down = True
            session.client.stop()

    def _mark_stopped(self, session: Session) -> None:
        session.gone.set()
        if not session.stopped.done():
            session.stopped.set_result(None)
        if self._unstopped.get(session.key) is session:
            del self._unstopped[session.key]

    async def _await_stopped(self, sessions: list[Session]) -> None:
        pending = [session.stopped for session in sessions if not session.stopped.done()]
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=STOP_WAIT_SECONDS)
        if late:
            log.warning(
                "%d neonize clients still dialing; each stops when its dial ends", len(late)
            )

    async def _wipe_then_report(self, spec: InstanceSpec, event: EngineEvent) -> None:
        await self._in_thread(_wipe_store, spec.store_path)
        self.sink(event)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def expire_lease_later(self, lease: WriteLease) -> None:
        asyncio.get_running_loop().call_later(self._settle_seconds, lease.release)


def _wipe_store(store_path: Path) -> None:
    for suffix in _STORE_SUFFIXES:
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
