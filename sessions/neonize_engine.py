"""The engine on real WhatsApp: neonize 0.5.2, the Python binding of Go's whatsmeow.

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
import contextlib
import ctypes
import dataclasses
import importlib
import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

from zapgate.sessions import (
    neonize_contacts,
    neonize_events,
    neonize_groups,
    neonize_history,
    neonize_inbound,
    neonize_lids,
    neonize_presence,
    neonize_send,
)
from zapgate.sessions.engine import (
    Contact,
    Engine,
    EventSink,
    InstanceSpec,
    NumberCheck,
    OutgoingContent,
    PairCode,
    SendResult,
)
from zapgate.sessions.errors import EngineError, NotConnected, NotRunning
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
from zapgate.sessions.gate import Gate, WriteLease
from zapgate.sessions.groups import GroupInfo, JoinRequest, ParticipantOutcome

# After neonize_events, whose import of neonize silences neonize's leaked-pipe warnings.
# neonize has no type information: a module typed Any is all it offers.
neonize_client: Any = importlib.import_module("neonize.client")

log = logging.getLogger(__name__)

T = TypeVar("T")

# Longest a connect holds the gate as a writer when neither a QR code, an event nor its end
# arrives first. Neonize() writes the Go maps before any network I/O: only opening (and, the
# first time, migrating) the store comes earlier, a few milliseconds on tmpfs. The dial
# after them can take long (a stalled DNS query takes 5 s, a dead proxy forever), and every
# other neonize call would wait that long.
# How long the phone has to enter a pair code before WhatsApp drops the pairing attempt.
PAIR_CODE_LIFETIME_SECONDS = 160.0
START_SETTLE_SECONDS = 1.0
# How long stop()/close() wait for a client's Go side to be stopped. A client still dialing is
# stopped when its dial ends; waiting for that would let one dead proxy hang the worker.
STOP_WAIT_SECONDS = 10.0
# How long a restart waits for the previous client of the same instance to be stopped, so two
# connections with one session never overlap (WhatsApp would replace one stream).
PREVIOUS_STOP_WAIT_SECONDS = 30.0
CALL_THREADS = 8
# Phone numbers each session remembers as on WhatsApp (with the number WhatsApp answered).
KNOWN_USERS = 4096
# LID-map lookups per reader call when listing contacts: one call per contact row, so a long
# address book is read in slices and a start or stop waits for one slice, not for all.
ALTERNATES_PER_CALL = 200

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

# go-sqlite3 opens the store as an SQLite URI: these characters would change its meaning.
_NOT_IN_STORE_PATH = re.compile(r"[?#%]")
_E164 = neonize_contacts.E164
_STORE_SUFFIXES = ("", "-journal", "-wal", "-shm")
# Parks a neonize thread for good (see `_Session._on_login_status`).
_NEVER = threading.Event()


class NeonizeEngine(Engine):
    def __init__(
        self,
        sink: EventSink,
        *,
        settle_seconds: float = START_SETTLE_SECONDS,
        call_threads: int = CALL_THREADS,
    ) -> None:
        super().__init__(sink)
        _make_neonize_threads_daemonic()
        self._gate = Gate()
        self._settle_seconds = settle_seconds
        # Short neonize calls and store wipes; connects never run here.
        self._calls = ThreadPoolExecutor(call_threads, thread_name_prefix="neonize-call")
        self._sessions: dict[InstanceKey, _Session] = {}  # hosted now
        self._unstopped: dict[InstanceKey, _Session] = {}  # forgotten, Go side not stopped
        self._running: set[_Session] = set()  # Neonize() has not returned
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
        session = _Session(
            spec,
            _store_name(spec),
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
        session = self._sessions.get(key)
        if session is not None and await self.is_connected(key):
            try:
                await self._read(session, _unlink)
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
        if not _E164.fullmatch(phone):
            raise EngineError(f"{phone!r} is not an E.164 phone number (e.g. +5511999998888)")
        if session.qr_count == 0:
            # docs/engine.md, hazard 5: whatsmeow rejects PairPhone until its connection is up.
            raise EngineError(
                f"{key} has not shown its first QR code yet; request the pair code after it"
            )
        # The caller shows the code (the supervisor, like with the simulator): no event.
        code = await self._read(session, lambda client: str(client.PairPhone(phone[1:], True)))
        return PairCode(code, PAIR_CODE_LIFETIME_SECONDS)

    async def send(
        self, key: InstanceKey, recipient_jid: str, content: OutgoingContent
    ) -> SendResult:
        """Looks a phone-number recipient up (WhatsApp's number lookup: whatsmeow itself
        sends to a number that has no WhatsApp without any error, and the message is never
        delivered), uploads the media, builds the message and sends it. Each step is its own
        reader call: an upload does not hold the gate while the message is sent."""
        to = neonize_send.parse_recipient(recipient_jid)
        neonize_send.check_content(content)
        session = self._sending(key)
        to = await self._on_whatsapp(session, to)
        content = neonize_send.addressed(content, neonize_send.jid_text(to))
        uploaded = None
        if (upload := neonize_send.upload_of(content)) is not None:
            media, media_type = upload
            kind = content.kind
            uploaded = await self._read(
                session, lambda client: _upload(client, key, kind, media.data, media_type)
            )
        now = time.time()
        if content.kind == "poll":  # its secret comes from whatsmeow
            message = await self._read(
                session, lambda client: neonize_send.build_poll(client, content)
            )
        else:  # off the loop: building an image's preview decodes the whole image
            message = await self._in_thread(
                lambda: neonize_send.build_message(content, uploaded, now=now)
            )
        response = await self._read(session, lambda client: _deliver(client, key, to, message))
        return SendResult(message_id=str(response.ID), timestamp=float(response.Timestamp))

    async def set_typing(self, key: InstanceKey, recipient_jid: str, typing: bool) -> None:
        """Also looks a phone-number recipient up, like `send` (and remembers it for the send
        that follows): "typing..." shows only in the chat of the number WhatsApp knows."""
        to = neonize_send.parse_recipient(recipient_jid)
        session = self._sending(key)
        to = await self._on_whatsapp(session, to)
        await self._read(session, lambda client: _show_typing(client, key, to, typing))

    async def mark_read(
        self, key: InstanceKey, chat_jid: str, sender_jid: str, message_ids: list[str]
    ) -> None:
        """whatsmeow's MarkRead: one read receipt for the messages (in a group, of one
        sender; in a direct chat the sender is the chat)."""
        chat = neonize_send.parse_recipient(chat_jid)
        sender = neonize_send.parse_recipient(sender_jid) if sender_jid else chat
        session = self._connected(key, "mark messages read")
        await self._read(
            session, partial(_mark_read, key=key, chat=chat, sender=sender, ids=message_ids)
        )

    async def send_presence(self, key: InstanceKey, chat_jid: str, presence: str) -> None:
        if presence in neonize_send.ACCOUNT_PRESENCES:
            session = self._connected(key, "set the account's presence")
            value = neonize_send.ACCOUNT_PRESENCES[presence]
            await self._read(session, partial(_account_presence, key=key, value=value))
            return
        if presence == neonize_send.SUBSCRIBE:
            contact = neonize_send.parse_recipient(chat_jid)
            session = self._connected(key, "subscribe to a presence")
            await self._read(session, partial(_subscribe_presence, key=key, contact=contact))
            return
        to = neonize_send.parse_recipient(chat_jid)
        state, media = neonize_send.presence_state(presence)
        session = self._connected(key, "send a chat presence")
        to = await self._on_whatsapp(session, to)
        await self._read(session, partial(_presence, key=key, to=to, state=state, media=media))

    async def reject_call(self, key: InstanceKey, caller_jid: str, call_id: str) -> None:
        """whatsmeow's RejectCall, naming the caller as the offer did (a number or a LID)."""
        caller = neonize_send.parse_recipient(caller_jid)
        session = self._connected(key, "reject a call")
        await self._read(session, partial(_reject_call, key=key, caller=caller, call_id=call_id))

    async def download_media(self, key: InstanceKey, media_ref: str) -> bytes:
        """Downloads and decrypts received media (whatsmeow's DownloadAny). The download holds
        its call thread and a read hold on the gate until the whole file is in."""
        message = neonize_inbound.download_message(media_ref)
        session = self._connected(key, "download media")
        return await self._read(session, lambda client: _download(client, key, message))

    async def contacts(self, key: InstanceKey) -> list[Contact]:
        """whatsmeow's contact store, with each row's other JID (phone number or LID) from
        its LID map."""
        session = self._connected(key, "list contacts")
        stored = await self._read(session, lambda client: _stored_contacts(client, key))
        wanted = neonize_contacts.alternates_wanted(stored)
        alternates: dict[str, Any] = {}
        for start in range(0, len(wanted), ALTERNATES_PER_CALL):
            jids = wanted[start : start + ALTERNATES_PER_CALL]
            alternates.update(await self._read(session, partial(_alternates, jids=jids)))
        return neonize_contacts.to_contacts(stored, alternates)

    async def check_numbers(self, key: InstanceKey, phones: list[str]) -> list[NumberCheck]:
        """One IsOnWhatsApp query for all the numbers. The numbers found are remembered for
        `send`, which then needs no lookup of its own."""
        neonize_contacts.check_phones(phones)
        session = self._connected(key, "check numbers")
        if not phones:
            return []
        asked = list(dict.fromkeys(phones))
        answers = await self._read(session, lambda client: _check_numbers(client, key, asked))
        checks = neonize_contacts.to_number_checks(phones, answers)
        for check in checks:
            known, _, server = check.jid.partition("@")
            if check.on_whatsapp and server == neonize_events.USER_SERVER:
                session.remember_user(check.phone[1:], known)
        return checks

    # -- groups (neonize_groups.py), each one reader call -----------------------------------

    async def _group(self, key: InstanceKey, doing: str, call: Callable[[Any], T]) -> T:
        return await self._read(self._connected(key, doing), call)

    async def list_groups(self, key: InstanceKey) -> list[GroupInfo]:
        return await self._group(key, "list groups", partial(neonize_groups.list_groups, key=key))

    async def group_info(self, key: InstanceKey, group_jid: str) -> GroupInfo:
        call = partial(neonize_groups.group_info, key=key, group=group_jid)
        return await self._group(key, "read a group", call)

    async def create_group(
        self, key: InstanceKey, name: str, phones: list[str]
    ) -> tuple[GroupInfo, list[ParticipantOutcome]]:
        call = partial(neonize_groups.create_group, key=key, name=name, phones=phones)
        return await self._group(key, "create a group", call)

    async def update_participants(
        self, key: InstanceKey, group_jid: str, action: str, phones: list[str]
    ) -> list[ParticipantOutcome]:
        call = partial(
            neonize_groups.update_participants,
            key=key,
            group=group_jid,
            action=action,
            phones=phones,
        )
        return await self._group(key, "change participants", call)

    async def set_group_name(self, key: InstanceKey, group_jid: str, name: str) -> None:
        def rename(client: Any) -> None:
            to = neonize_groups.group_jid(group_jid)
            neonize_groups.call(key, "rename the group", lambda: client.set_group_name(to, name))

        await self._group(key, "rename a group", rename)

    async def set_group_topic(self, key: InstanceKey, group_jid: str, topic: str) -> None:
        call = partial(neonize_groups.set_topic, key=key, group=group_jid, topic=topic)
        await self._group(key, "describe a group", call)

    async def set_group_settings(
        self, key: InstanceKey, group_jid: str, announce: bool | None, locked: bool | None
    ) -> None:
        call = partial(
            neonize_groups.set_settings, key=key, group=group_jid, announce=announce, locked=locked
        )
        await self._group(key, "change a group", call)

    async def set_group_photo(self, key: InstanceKey, group_jid: str, data: bytes) -> str:
        call = partial(neonize_groups.set_photo, key=key, group=group_jid, data=data)
        return await self._group(key, "change a group's picture", call)

    async def join_requests(self, key: InstanceKey, group_jid: str) -> list[JoinRequest]:
        call = partial(neonize_groups.join_requests, key=key, group=group_jid)
        return await self._group(key, "read join requests", call)

    async def invite_link(self, key: InstanceKey, group_jid: str, revoke: bool) -> str:
        call = partial(neonize_groups.invite_link, key=key, group=group_jid, revoke=revoke)
        return await self._group(key, "read an invite link", call)

    async def preview_invite(self, key: InstanceKey, code: str) -> GroupInfo:
        def preview(client: Any) -> GroupInfo:
            info = neonize_groups.call(
                key, "read the invite", lambda: client.get_group_info_from_link(code)
            )
            return neonize_groups.to_group(info)

        return await self._group(key, "read an invite", preview)

    async def join_group(self, key: InstanceKey, code: str) -> str:
        call = partial(neonize_groups.join_group, key=key, code=code)
        return await self._group(key, "join a group", call)

    async def leave_group(self, key: InstanceKey, group_jid: str) -> None:
        def leave(client: Any) -> None:
            to = neonize_groups.group_jid(group_jid)
            neonize_groups.call(key, "leave the group", lambda: client.leave_group(to))

        await self._group(key, "leave a group", leave)

    async def resolve_jids(self, key: InstanceKey, jids: list[str]) -> list[str]:
        """whatsmeow's LID map (GetLIDFromPN / GetPNFromLID), in chunks like `contacts`."""
        session = self._connected(key, "resolve JIDs")
        found: dict[str, Any] = {}
        asked = list(dict.fromkeys(jids))
        for start in range(0, len(asked), ALTERNATES_PER_CALL):
            chunk = [neonize_lids.to_neonize(j) for j in asked[start : start + ALTERNATES_PER_CALL]]
            found.update(await self._read(session, partial(_alternates, jids=chunk)))
        return neonize_lids.in_order(jids, found)

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

    def _on_event(self, session: _Session, event: EngineEvent) -> None:
        if self._sessions.get(session.key) is not session:
            return  # stopped or restarted since: whoever asked already knows
        if isinstance(event, Connected):
            session.connected = True
        if not isinstance(event, _ENDINGS):
            self.sink(event)
            return
        self._forget(session)
        if isinstance(event, LoggedOut):
            self._spawn(self._wipe_then_report(session.spec, event))
        else:
            self.sink(event)

    def _on_poll_vote(self, session: _Session, event: MessageReceived, message: Any) -> None:
        """Decrypts a vote off neonize's callback thread (a Go call reading the poll's secret
        from the store), then reports it with the options chosen."""
        if self._sessions.get(session.key) is session:
            self._spawn(self._decrypt_vote(session, event, message))

    async def _decrypt_vote(self, session: _Session, event: MessageReceived, message: Any) -> None:
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
        self._on_event(session, dataclasses.replace(event, poll_votes=votes))

    def _on_settled(self, session: _Session) -> None:
        self._stop_when_settled(session)

    def _on_finished(self, session: _Session, error: str | None) -> None:
        """`error` is None when the session was stopped before neonize was even called."""
        self._running.discard(session)
        if error is not None:
            self._on_event(session, session.ending(error))
        self._stop_when_settled(session)

    def _forget(self, session: _Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        self._unstopped[session.key] = session
        session.stop_requested = True
        self._stop_when_settled(session)

    def _stop_when_settled(self, session: _Session) -> None:
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

    def _stop_client(self, session: _Session) -> None:
        with self._gate.writing():
            session.torn_down = True
            session.client.stop()

    def _mark_stopped(self, session: _Session) -> None:
        session.gone.set()
        if not session.stopped.done():
            session.stopped.set_result(None)
        if self._unstopped.get(session.key) is session:
            del self._unstopped[session.key]

    async def _await_stopped(self, sessions: list[_Session]) -> None:
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

    # -- calls into neonize -----------------------------------------------------------------

    def _hosted(self, key: InstanceKey) -> _Session:
        session = self._sessions.get(key)
        if session is None:
            raise NotRunning(f"{key} is not running on this engine; start it first")
        return session

    def _sending(self, key: InstanceKey) -> _Session:
        return self._connected(key, "send")

    def _connected(self, key: InstanceKey, doing: str) -> _Session:
        session = self._hosted(key)
        if not session.connected:
            raise NotConnected(f"{key} is not connected to WhatsApp yet; {doing} once it is")
        return session

    async def _on_whatsapp(self, session: _Session, to: Any) -> Any:
        """The recipient as WhatsApp knows it. WhatsApp may answer with another number than
        the one asked: Brazilian mobile numbers registered before the ninth digit was added
        live on without it, and a message to the other form is never delivered."""
        user = neonize_send.phone_user(to)
        if not user:
            return to  # a group or a LID: no number to look up
        known = session.known_users.get(user)
        if known is None:
            key = session.key
            known = await self._read(session, lambda client: _look_up(client, key, user))
            session.remember_user(user, known)
        return neonize_send.jid(known, neonize_events.USER_SERVER)

    async def _read(self, session: _Session, call: Callable[[Any], T]) -> T:
        """Runs a neonize call as a reader of the gate, on a call thread."""
        return await self._in_thread(self._read_now, session, call)

    def _read_now(self, session: _Session, call: Callable[[Any], T]) -> T:
        with self._gate.reading():
            if session.torn_down:  # its Go client is gone: calls on it would crash Go
                raise NotRunning(f"{session.key} is not running")
            if not session.past_dial:  # the call would wait for the dial, holding the gate
                raise NotConnected(f"{session.key} is still connecting")
            try:
                return call(session.client)
            except neonize_client.NeonizeError as error:
                raise EngineError(f"WhatsApp refused ({session.key}): {error}") from error

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._calls, function, *args)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expire_lease_later(self, lease: WriteLease) -> None:
        asyncio.get_running_loop().call_later(self._settle_seconds, lease.release)


class _Session:
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
        previous: _Session | None,
        engine: NeonizeEngine,
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
        self._lease = lease = self.engine._gate.acquire_write()
        if self.stop_requested:  # stopped while queued: no Go client was ever made
            self.past_dial = True
            lease.release()
            self._post(self.engine._on_finished, self, None)
            return
        self.ran = True
        self._post(self.engine._expire_lease_later, lease)
        try:
            error = self._connect()
        finally:
            self.past_dial = True
            lease.release()
        self._post(self.engine._on_finished, self, error)

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
        self._post(self.engine._on_event, self, neonize_events.qr_shown(self.key, code, index))

    def _on_login_status(self, _uuid: int, status_address: int) -> None:
        status = ctypes.string_at(status_address).decode()
        self._settle()
        event = neonize_events.login_status_event(self.key, status)
        if event is not None:
            self._post(self.engine._on_event, self, event)
        if status != neonize_events.QR_SUCCESS:
            # On return neonize would read the Go maps, waiting for a JID that never comes,
            # while the engine stops the client and deletes it from those maps: a crash
            # (nil client, or a concurrent map access). Parked, it touches nothing.
            _NEVER.wait()

    def _on_event(self, message: Any) -> None:
        event = neonize_events.to_engine_event(self.key, message, self.client.me)
        if event is not None:
            self._post(self.engine._on_event, self, event)

    def _on_group_event(self, message: Any) -> None:
        me = self.client.me
        mine = neonize_events.user_jid(me.JID) if me is not None else ""
        try:
            changes = neonize_groups.to_group_changes(self.key, message, mine)
        except Exception:
            log.exception("%s: dropped a group event that could not be mapped", self.uuid)
            return
        for change in changes:
            self._post(self.engine._on_event, self, change)

    def _on_presence(self, message: Any) -> None:
        try:
            event = neonize_presence.to_presence_event(self.key, message)
        except Exception:
            log.exception(
                "%s: dropped a presence or call event that could not be mapped", self.uuid
            )
            return
        if event is not None:
            self._post(self.engine._on_event, self, event)

    def _on_history(self, message: Any) -> None:
        try:
            event = neonize_history.to_history_synced(self.key, message)
        except Exception:
            log.exception("%s: dropped a history sync that could not be mapped", self.uuid)
            return
        self._post(self.engine._on_event, self, event)

    def _on_message(self, message: Any) -> None:
        try:
            event = neonize_inbound.to_message_received(self.key, message)
        except Exception:
            # One message zapgate cannot read must not end the delivery of the others.
            log.exception("%s: dropped an inbound message that could not be mapped", self.uuid)
            return
        if event is not None and event.kind == "poll_vote":
            self._post(self.engine._on_poll_vote, self, event, message)
        elif event is not None:
            self._post(self.engine._on_event, self, event)

    def _settle(self) -> None:
        if self.past_dial:
            return
        self.past_dial = True
        if self._lease is not None:
            self._lease.release()
        self._post(self.engine._on_settled, self)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        # A closed loop means the worker is exiting: nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(callback, *args)


class _DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["daemon"] = True
        super().__init__(*args, **kwargs)


def _make_neonize_threads_daemonic() -> None:
    """NewClient.connect() runs Neonize() on a non-daemon thread, and some of those calls
    never return: one would keep the worker process from ever exiting."""
    neonize_client.Thread = _DaemonThread


def _store_name(spec: InstanceSpec) -> str:
    name = str(spec.store_path.absolute())
    if _NOT_IN_STORE_PATH.search(name):
        raise EngineError(f"the store path {name!r} may not contain '?', '#' or '%'")
    return name


def _unlink(client: Any) -> None:
    # Nothing to unlink while only QR codes are shown (connected, not logged in).
    if client.is_logged_in:
        client.logout()


# -- reader calls of send and set_typing (run under the gate, on a call thread) -------------


def _look_up(client: Any, key: InstanceKey, user: str) -> str:
    """The number WhatsApp knows for `user` (digits); SendRefused when it has no WhatsApp."""
    try:
        answers = client.is_on_whatsapp(f"+{user}")
    except neonize_client.IsOnWhatsAppError as error:
        raise neonize_send.lookup_error(key, str(error)) from error
    return neonize_send.known_user(user, answers)


def _upload(client: Any, key: InstanceKey, kind: str, data: bytes, media_type: Any) -> Any:
    """Encrypts and uploads a media file to WhatsApp's media servers (neonize's
    UploadResponse)."""
    try:
        return client.upload(data, media_type)
    except neonize_client.UploadError as error:
        raise neonize_send.upload_error(key, kind, str(error)) from error


def _deliver(client: Any, key: InstanceKey, to: Any, message: Any) -> Any:
    """Sends a built message and waits for the server's acknowledgement (neonize's
    SendResponse)."""
    try:
        return client.send_message(to, message)
    except neonize_client.SendMessageError as error:
        raise neonize_send.send_error(key, str(error)) from error


def _show_typing(client: Any, key: InstanceKey, to: Any, typing: bool) -> None:
    state, media = neonize_send.typing_state(typing)
    try:
        client.send_chat_presence(to, state, media)
    except neonize_client.SendPresenceError as error:
        raise neonize_send.typing_error(key, str(error)) from error


def _mark_read(client: Any, *, key: InstanceKey, chat: Any, sender: Any, ids: list[str]) -> None:
    try:
        client.mark_read(*ids, chat=chat, sender=sender, receipt=neonize_send.READ_RECEIPT)
    except neonize_client.MarkReadError as error:
        raise neonize_send.read_error(key, str(error)) from error


def _reject_call(client: Any, *, key: InstanceKey, caller: Any, call_id: str) -> None:
    try:
        client.reject_call(caller, call_id)
    except neonize_client.NeonizeError as error:  # RejectCallError (neonize.exc only)
        raise neonize_send.call_error(key, str(error)) from error


def _account_presence(client: Any, *, key: InstanceKey, value: Any) -> None:
    try:
        client.send_presence(value)
    except neonize_client.SendPresenceError as error:
        raise neonize_send.presence_error(key, str(error)) from error


def _subscribe_presence(client: Any, *, key: InstanceKey, contact: Any) -> None:
    try:
        client.subscribe_presence(contact)
    except neonize_client.SubscribePresenceError as error:
        raise neonize_send.presence_error(key, str(error)) from error


def _presence(client: Any, *, key: InstanceKey, to: Any, state: Any, media: Any) -> None:
    try:
        client.send_chat_presence(to, state, media)
    except neonize_client.SendPresenceError as error:
        raise neonize_send.presence_error(key, str(error)) from error


# -- reader calls of download_media, contacts and check_numbers --------------------------------


def _download(client: Any, key: InstanceKey, message: Any) -> bytes:
    try:
        return bytes(client.download_any(message))
    except neonize_client.DownloadError as error:
        raise neonize_inbound.download_error(key, str(error)) from error


def _stored_contacts(client: Any, key: InstanceKey) -> list[Any]:
    try:
        return list(client.contact.get_all_contacts())
    except neonize_client.ContactStoreError as error:
        raise neonize_contacts.contacts_error(key, str(error)) from error


def _alternates(client: Any, jids: list[Any]) -> dict[str, Any]:
    """The other JID of each user in whatsmeow's LID map (only those it knows)."""
    found: dict[str, Any] = {}
    for jid in jids:
        look_up = (
            client.get_pn_from_lid
            if jid.Server == neonize_events.LID_SERVER
            else client.get_lid_from_pn
        )
        try:
            other = look_up(jid)
        except neonize_client.GetJIDFromStoreError:
            continue  # a broken mapping row costs that contact its other JID, nothing more
        if other.User:
            found[neonize_events.user_jid(jid)] = other
    return found


def _check_numbers(client: Any, key: InstanceKey, phones: list[str]) -> list[Any]:
    try:
        return list(client.is_on_whatsapp(*phones))
    except neonize_client.IsOnWhatsAppError as error:
        raise neonize_contacts.check_error(key, str(error)) from error


def _wipe_store(store_path: Path) -> None:
    for suffix in _STORE_SUFFIXES:
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
