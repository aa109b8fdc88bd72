"""One start of one instance on the neonize engine: its neonize client, the thread that
connects it, and neonize's callbacks (on neonize's thread), which map each event and post
it to the event loop. What the engine decides (whether to report an event, when to stop a
client) happens on the loop, in the engine (neonize_engine.py, `SessionHost`)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, Protocol

from zapgate.sessions import (
    neonize_events,
    neonize_groups,
    neonize_history,
    neonize_inbound,
    neonize_presence,
)
from zapgate.sessions.engine import InstanceSpec
from zapgate.sessions.errors import EngineError
from zapgate.sessions.events import (
    ConnectFailed,
    Disconnected,
    EngineEvent,
    MessageReceived,
)
from zapgate.sessions.gate import Gate, WriteLease

# After neonize_events, whose import of neonize silences neonize's leaked-pipe warnings.
# neonize has no type information: a module typed Any is all it offers.
neonize_client: Any = importlib.import_module("neonize.client")

log = logging.getLogger(__name__)

# How long a restart waits for the previous client of the same instance to be stopped, so two
# connections with one session never overlap (WhatsApp would replace one stream).
PREVIOUS_STOP_WAIT_SECONDS = 30.0
# Phone numbers each session remembers as on WhatsApp (with the number WhatsApp answered).
KNOWN_USERS = 4096

# go-sqlite3 opens the store as an SQLite URI: these characters would change its meaning.
_NOT_IN_STORE_PATH = re.compile(r"[?#%]")
# Parks a neonize thread for good (see `Session._on_login_status`).
_NEVER = threading.Event()


class SessionHost(Protocol):
    """What a session asks of its engine. The session's threads only post these to the
    event loop (`Session._post`), except `gate`, which the connect thread takes as a writer."""

    @property
    def gate(self) -> Gate: ...

    def session_event(self, session: Session, event: EngineEvent) -> None: ...

    def session_poll_vote(self, session: Session, event: MessageReceived, message: Any) -> None: ...

    def session_settled(self, session: Session) -> None: ...

    def session_finished(self, session: Session, error: str | None) -> None: ...

    def expire_lease_later(self, lease: WriteLease) -> None: ...


class Session:
    """One start of one instance: its neonize client and the thread that connects it.

    The connect thread and neonize's callback thread only post to the event loop
    (docs/engine.md, hazard 4), release the write lease, count QR codes (`qr_count`, written
    by the QR callback only) and set `past_dial`. `torn_down` changes under the gate's write
    lease. The loop owns the rest."""

    def __init__(
        self,
        spec: InstanceSpec,
        store_name: str,
        *,
        uuid: str,
        previous: Session | None,
        engine: SessionHost,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.spec = spec
        self.key = spec.key
        # neonize's client id, a key of its Go maps: unique per start, so a call of an old
        # client that returns late can never touch the maps of the next one.
        self.uuid = uuid
        self.previous = previous
        self.engine = engine
        self.loop = loop
        self.qr_count = 0
        self.connected = False
        # Phone number -> the number WhatsApp answered for it (loop only).
        self.known_users: dict[str, str] = {}
        self.ran = False  # Neonize() was called
        self.stop_requested = False
        self.stop_scheduled = False
        self.torn_down = False
        self.gone = threading.Event()  # for the next start's thread
        self.stopped: asyncio.Future[None] = loop.create_future()
        self._lease: WriteLease | None = None
        # Neonize() is past its dial (or over): its client's socket lock is free. Set on the
        # thread that sees it first, before the loop hears of it.
        self.past_dial = False
        # Only a Python object: the Go client is created inside Neonize(), under the gate.
        self.client = self._new_client(store_name)

    def remember_user(self, user: str, known: str) -> None:
        if len(self.known_users) >= KNOWN_USERS:
            del self.known_users[next(iter(self.known_users))]  # the oldest
        self.known_users[user] = known

    def launch(self) -> None:
        thread = threading.Thread(target=self._run, name=f"neonize {self.uuid}", daemon=True)
        thread.start()

    def ending(self, error: str) -> EngineEvent:
        """What the end of the Neonize() call means when nobody stopped it."""
        detail = error or "neonize ended the connection without an error"
        return Disconnected(self.key, detail) if self.connected else ConnectFailed(self.key, detail)

    def _new_client(self, store_name: str) -> Any:
        client = neonize_client.NewClient(store_name, uuid=self.uuid)
        # Its finalizer would call Go's Stop() whenever Python collects it, outside the gate.
        client._stop_finalizer.detach()
        client.event.qr(self._on_qr)
        # neonize only prints the login status; this name-mangled hook is the only way in.
        client._NewClient__onLoginStatus = self._on_login_status
        for event_type in neonize_events.MAPPED_EVENT_TYPES:
            # A plain function: neonize would hold a bound method only weakly.
            client.event(event_type)(lambda _client, event: self._on_event(event))
        client.event(neonize_inbound.MESSAGE_EVENT)(lambda _client, event: self._on_message(event))
        for event_type in neonize_groups.GROUP_EVENT_TYPES:
            client.event(event_type)(lambda _client, event: self._on_group_event(event))
        for event_type in neonize_presence.PRESENCE_EVENT_TYPES:
            client.event(event_type)(lambda _client, event: self._on_presence(event))
        client.event(neonize_history.HISTORY_EVENT)(lambda _client, event: self._on_history(event))
        deliver = client.event.execute

        def execute(uuid: bytes, data: int, size: int, code: int) -> None:
            self._settle()  # any event, even the Device one no handler sees, ends the dial
            deliver(uuid, data, size, code)

        client.event.execute = execute
        return client

    # -- the connect thread ------------------------------------------------------------------

    def _run(self) -> None:
        if self.previous is not None:
            self.previous.gone.wait(PREVIOUS_STOP_WAIT_SECONDS)
        self._lease = lease = self.engine.gate.acquire_write()
        if self.stop_requested:  # stopped while queued: no Go client was ever made
            self.past_dial = True
            lease.release()
            self._post(self.engine.session_finished, self, None)
            return
        self.ran = True
        self._post(self.engine.expire_lease_later, lease)
        try:
            error = self._connect()
        finally:
            self.past_dial = True
            lease.release()
        self._post(self.engine.session_finished, self, error)

    def _connect(self) -> str:
        """Blocks for the life of the connection; returns neonize's error text, if any."""
        proxy = self.spec.proxy_url
        settings = neonize_client.ProxySettings(proxy_address=proxy) if proxy else None
        try:
            self.spec.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.client.connect(settings)
        except Exception as error:  # neonize raises NeonizeError with Go's error text
            return str(error) or repr(error)
        return ""

    # -- neonize's callbacks, on its thread ----------------------------------------------------

    def _on_qr(self, _client: Any, code: bytes) -> None:
        index = self.qr_count
        self.qr_count += 1
        self._settle()
        self._post(self.engine.session_event, self, neonize_events.qr_shown(self.key, code, index))

    def _on_login_status(self, _uuid: int, status_address: int) -> None:
        status = ctypes.string_at(status_address).decode()
        self._settle()
        event = neonize_events.login_status_event(self.key, status)
        if event is not None:
            self._post(self.engine.session_event, self, event)
        if status != neonize_events.QR_SUCCESS:
            # On return neonize would read the Go maps, waiting for a JID that never comes,
            # while the engine stops the client and deletes it from those maps: a crash
            # (nil client, or a concurrent map access). Parked, it touches nothing.
            _NEVER.wait()

    def _on_event(self, message: Any) -> None:
        event = neonize_events.to_engine_event(self.key, message, self.client.me)
        if event is not None:
            self._post(self.engine.session_event, self, event)

    def _on_group_event(self, message: Any) -> None:
        me = self.client.me
        mine = neonize_events.user_jid(me.JID) if me is not None else ""
        try:
            changes = neonize_groups.to_group_changes(self.key, message, mine)
        except Exception:
            log.exception("%s: dropped a group event that could not be mapped", self.uuid)
            return
        for change in changes:
            self._post(self.engine.session_event, self, change)

    def _on_presence(self, message: Any) -> None:
        try:
            event = neonize_presence.to_presence_event(self.key, message)
        except Exception:
            log.exception(
                "%s: dropped a presence or call event that could not be mapped", self.uuid
            )
            return
        if event is not None:
            self._post(self.engine.session_event, self, event)

    def _on_history(self, message: Any) -> None:
        try:
            event = neonize_history.to_history_synced(self.key, message)
        except Exception:
            log.exception("%s: dropped a history sync that could not be mapped", self.uuid)
            return
        self._post(self.engine.session_event, self, event)

    def _on_message(self, message: Any) -> None:
        try:
            event = neonize_inbound.to_message_received(self.key, message)
        except Exception:
            # One message zapgate cannot read must not end the delivery of the others.
            log.exception("%s: dropped an inbound message that could not be mapped", self.uuid)
            return
        if event is not None and event.kind == "poll_vote":
            self._post(self.engine.session_poll_vote, self, event, message)
        elif event is not None:
            self._post(self.engine.session_event, self, event)

    def _settle(self) -> None:
        if self.past_dial:
            return
        self.past_dial = True
        if self._lease is not None:
            self._lease.release()
        self._post(self.engine.session_settled, self)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        # A closed loop means the worker is exiting: nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(callback, *args)


class DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["daemon"] = True
        super().__init__(*args, **kwargs)


def make_neonize_threads_daemonic() -> None:
    """NewClient.connect() runs Neonize() on a non-daemon thread, and some of those calls
    never return: one would keep the worker process from ever exiting."""
    neonize_client.Thread = DaemonThread


def store_name(spec: InstanceSpec) -> str:
    name = str(spec.store_path.absolute())
    if _NOT_IN_STORE_PATH.search(name):
        raise EngineError(f"the store path {name!r} may not contain '?', '#' or '%'")
    return name
