"""The built-in WhatsApp simulator: a phone-in-a-box behind the same Engine interface as
neonize. It pairs by QR or pair code, connects from its stored session, and drops, bans,
replaces or logs out on command (SimulatorService)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from zapgate.engine.v1.simwa_pb2 import OwedReceipt
from zapgate.sessions import events as ev
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
from zapgate.sessions.errors import EngineError, NotConnected, NotRunning, Rejected, SendRefused
from zapgate.sessions.events import InstanceKey
from zapgate.sessions.groups import GroupInfo, JoinRequest, ParticipantOutcome
from zapgate.sessions.presence_subscriptions import PresenceSubscriptions
from zapgate.sessions.sim_contacts import AddressBook
from zapgate.sessions.sim_groups import SimGroups
from zapgate.sessions.sim_phone import PendingReceipt, PhoneLog, Received, describe
from zapgate.sessions.sim_store import SimDevice, SimStore
from zapgate.sessions.simwa_client import Link, SimServer
from zapgate.sessions.thread_batch import ThreadBatch

T = TypeVar("T")
PAIR_CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"  # whatsmeow's: no 0, O, I, U


@dataclass(frozen=True)
class SimTimings:
    """Defaults mirror WhatsApp: first QR 60 s, then 20 s each, six codes, then timeout."""

    qr_first_seconds: float = 60.0
    qr_next_seconds: float = 20.0
    qr_count: int = 6
    pair_code_seconds: float = 160.0
    # Time from start to the server's answer (connected, QR, or a ban refusal).
    connect_seconds: float = 0.2
    # How often a failing keepalive reports another failure.
    keepalive_seconds: float = 25.0
    # After a send: the recipient's phone reports delivered, then read (negative: never).
    delivered_seconds: float = 1.0
    read_seconds: float = 3.0


class SimSession:
    """One simulated connection, driven by its own task."""

    def __init__(
        self,
        spec: InstanceSpec,
        timings: SimTimings,
        sink: EventSink,
        on_connected: Callable[[], None] = lambda: None,
        server: SimServer | None = None,
        on_end: Callable[[ev.EngineEvent | None], None] = lambda _: None,
        files: ThreadBatch | None = None,
    ) -> None:
        self.spec = spec
        self.files = files or ThreadBatch()  # the engine's: opens of many starts batched
        # With a simulated WhatsApp server, the phone side lives there (one for every node):
        # the session attaches once paired, and receipts come from the server.
        self.server = server
        self.on_end = on_end
        self.server_link: Link | None = None
        self.on_connected = on_connected
        self.key = spec.key
        self.store = SimStore(spec.store_path)
        self.timings = timings
        self.sink = sink
        self.device: SimDevice | None = None
        self.connected = False
        self.qr_codes: list[tuple[str, float]] = []  # (code, expires at, monotonic)
        self.pair_code: tuple[str, str, float] | None = None  # (code, phone, expires at)
        self.linked = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.keepalive_task: asyncio.Task[None] | None = None
        self.receipt_tasks: set[asyncio.Task[None]] = set()
        self.receipts_scheduled: set[str] = set()  # message ids, in this run
        self.phone = PhoneLog(spec.runtime_dir)
        self.address_book = AddressBook(self.store)
        # Whose presence this connection subscribed to: WhatsApp forgets it when it ends.
        self.subscribed: set[str] = set()

    async def run(self) -> None:
        await asyncio.sleep(self.timings.connect_seconds)
        device, owed = await self.files.run(self._open)
        self.device = device
        ban_left = self.device.banned_until - time.time()
        if ban_left > 0:
            self.sink(ev.TemporarilyBanned(self.key, code=101, expires_in_seconds=ban_left))
            return
        if not self.device.paired:
            await self._pair()
        if self.device.paired:
            if self.server is not None:
                try:
                    self.server_link = await self.server.attach(
                        self.device, self._server_receipt, self.on_end, self.key
                    )
                except NotConnected as error:
                    self.on_end(ev.Disconnected(self.key, str(error)))
                    return
            self.connected = True
            self.sink(
                ev.Connected(self.key, jid=self.device.jid or "", phone=self.device.phone or "")
            )
            if self.server_link is None:
                # Receipts the phones owe from before a crash or drop arrive now (or when due).
                if owed is None:  # paired just now
                    owed = await asyncio.to_thread(self.phone.pending_receipts)
                self.schedule_receipts(owed)
            self.on_connected()
            await asyncio.Event().wait()  # connected until stopped, dropped or replaced

    def _open(self) -> tuple[SimDevice, list[PendingReceipt] | None]:
        """On a thread: the device and, when it is paired, the receipts its phones owe
        (nothing adds any before it connects)."""
        device = self.store.load_or_create()
        return device, self.phone.pending_receipts() if device.paired else None

    async def _pair(self) -> None:
        assert self.device is not None
        for index in range(self.timings.qr_count):
            lifetime = self.timings.qr_first_seconds if index == 0 else self.timings.qr_next_seconds
            code = self.device.qr_code(ref=f"2@{secrets.token_urlsafe(48)}")
            self.qr_codes.append((code, time.monotonic() + lifetime))
            self.sink(ev.QrShown(self.key, code=code, index=index, lifetime_seconds=lifetime))
            try:
                await asyncio.wait_for(self.linked.wait(), lifetime)
            except TimeoutError:
                continue
            return
        self.sink(ev.QrTimedOut(self.key))

    async def link(self, phone: str) -> None:
        """The phone accepted: store the pairing, as whatsmeow does on PairSuccess."""
        jid = f"{phone.lstrip('+')}:{secrets.randbelow(90) + 10}@s.whatsapp.net"
        await asyncio.to_thread(self.store.save_pairing, jid, phone)
        self.device = await asyncio.to_thread(self.store.load_or_create)
        self.sink(ev.Paired(self.key, jid=jid, phone=phone))
        self.linked.set()

    def scan_qr(self, code: str) -> None:
        if self.linked.is_set() or not self.qr_codes:
            raise NotRunning("no QR code is being shown for this instance")
        current, expires = self.qr_codes[-1]
        if code == current and time.monotonic() < expires:
            return
        if any(code == old for old, _ in self.qr_codes):
            raise Rejected("that QR code has expired; scan the current one")
        raise Rejected("that is not the QR code this instance shows")

    def new_pair_code(self, phone: str) -> str:
        if not self.qr_codes or self.linked.is_set():
            raise EngineError("a pair code can be requested only after the first QR code")
        raw = "".join(secrets.choice(PAIR_CODE_ALPHABET) for _ in range(8))
        code = f"{raw[:4]}-{raw[4:]}"
        self.pair_code = (code, phone, time.monotonic() + self.timings.pair_code_seconds)
        return code

    def check_pair_code(self, code: str) -> str:
        """The phone the code was requested for, if the code is right and fresh."""
        if self.pair_code is None or self.linked.is_set():
            raise NotRunning("no pair code was requested for this instance")
        expected, phone, expires = self.pair_code
        if normalize_pair_code(code) != normalize_pair_code(expected):
            raise Rejected("that is not the pair code this instance shows")
        if time.monotonic() >= expires:
            raise Rejected("that pair code has expired; request a new one")
        return phone

    def set_keepalive(self, failing: bool) -> None:
        if self.keepalive_task is not None:
            self.keepalive_task.cancel()
            self.keepalive_task = None
        if failing:
            self.keepalive_task = asyncio.create_task(self._fail_keepalives())
        else:
            self.sink(ev.KeepAliveRestored(self.key))

    async def _fail_keepalives(self) -> None:
        failures = 0
        while True:
            failures += 1
            self.sink(ev.KeepAliveFailing(self.key, failures=failures))
            await asyncio.sleep(self.timings.keepalive_seconds)

    async def record(self, received: Received, receipts: list[PendingReceipt]) -> None:
        """What this device sent reaches the phones, with the receipts they will send."""
        if self.server_link is not None:
            await self.server_link.deliver(received, receipts)
            return
        await asyncio.to_thread(self.phone.append, received, receipts)
        self.schedule_receipts(receipts)

    def _server_receipt(self, receipt: OwedReceipt) -> None:
        """A receipt the server pushed: reported, then acknowledged (at least once, as the
        phone file's receipts are)."""
        self.sink(ev.Receipt(self.key, (receipt.message_id,), receipt.kind, receipt.recipient_jid))
        if self.server_link is not None:
            task = asyncio.create_task(self.server_link.ack(receipt))
            self.receipt_tasks.add(task)
            task.add_done_callback(self.receipt_tasks.discard)

    def receipts_due(self, message_id: str, recipient_jid: str) -> list[PendingReceipt]:
        """The receipts a recipient's phone sends for a message sent now."""
        due, now = [], time.time()
        for kind, at in (
            ("delivered", self.timings.delivered_seconds),
            ("read", self.timings.read_seconds),
        ):
            if at < 0:
                break
            due.append(PendingReceipt(message_id, recipient_jid, kind, now + at))
        return due

    def schedule_receipts(self, receipts: list[PendingReceipt]) -> None:
        by_message: dict[str, list[PendingReceipt]] = {}
        for receipt in receipts:
            by_message.setdefault(receipt.message_id, []).append(receipt)
        for message_id, owed in by_message.items():
            if message_id in self.receipts_scheduled:  # sent after connecting: already on
                continue
            self.receipts_scheduled.add(message_id)
            task = asyncio.create_task(self._receipts(owed))
            self.receipt_tasks.add(task)
            task.add_done_callback(self.receipt_tasks.discard)

    async def _receipts(self, owed: list[PendingReceipt]) -> None:
        for receipt in sorted(owed, key=lambda r: r.due_at):  # delivered before read
            await asyncio.sleep(max(0.0, receipt.due_at - time.time()))
            self.sink(
                ev.Receipt(self.key, (receipt.message_id,), receipt.kind, receipt.recipient_jid)
            )
            await asyncio.to_thread(self.phone.receipt_sent, receipt.message_id, receipt.kind)

    async def cancel(self) -> None:
        if self.server_link is not None:
            await self.server_link.close()
        for task in (self.task, self.keepalive_task, *self.receipt_tasks):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def normalize_pair_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


class SimEngine(Engine):
    def __init__(
        self, sink: EventSink, timings: SimTimings | None = None, server: SimServer | None = None
    ) -> None:
        super().__init__(sink)
        self.timings = timings or SimTimings()
        self.server = server  # None: the phone side is a file in each instance's runtime dir
        self._endings: set[asyncio.Task[None]] = set()
        self._sessions: dict[InstanceKey, SimSession] = {}
        # (instance, phone digits) -> refusal code; kept here, not in the session, so it
        # outlives reconnects of the instance.
        self._failing: dict[tuple[InstanceKey, str], str] = {}
        # instance -> the phone digits on WhatsApp; absent: every number is.
        self._registered: dict[InstanceKey, frozenset[str]] = {}
        # instance -> phone-number JID -> LID: the engine's LID map (SetLidMappings, learned
        # from injected messages); while this worker lives, with the address book's LIDs.
        self._lids: dict[InstanceKey, dict[str, str]] = {}
        # WhatsApp's media servers: received media, by reference, while this worker lives.
        self._media_server: dict[str, bytes] = {}
        # (instance, phone digits) whose privacy settings refuse being added to groups.
        self._refusing_adds: set[tuple[InstanceKey, str]] = set()
        self._group_lock = asyncio.Lock()  # one group change at a time (read-modify-write)
        # History the phone will send (PreloadHistory), delivered at the next connection.
        self._history: dict[InstanceKey, list[ev.HistorySynced]] = {}
        # Presence subscriptions to renew on each connection (as the neonize engine does).
        self._presence = PresenceSubscriptions()
        self._renewals: set[asyncio.Task[list[str]]] = set()
        self._files = ThreadBatch()  # 1,000 starts after a restart: a few thread hand-offs

    async def send(
        self, key: InstanceKey, recipient_jid: str, content: OutgoingContent
    ) -> SendResult:
        session = self._connected(key)
        user = recipient_jid.split("@")[0].split(":")[0]
        code = self._failing.get((key, user))
        if not self._is_registered(key, user):
            code = "not_on_whatsapp"
        if code == "not_on_whatsapp":
            raise SendRefused(code, f"+{user} is not on WhatsApp")
        if code:
            raise SendRefused(code, f"WhatsApp refused the message to +{user} (error {code})")
        message_id = f"3EB0{secrets.token_hex(8).upper()}"
        # Reactions, edits and deletions carry no receipts of their own in WhatsApp's apps.
        receipts = [] if content.action else session.receipts_due(message_id, recipient_jid)
        await session.record(describe(recipient_jid, content, message_id), receipts)
        return SendResult(message_id, time.time())

    async def set_typing(self, key: InstanceKey, recipient_jid: str, typing: bool) -> None:
        session = self._connected(key)
        shown = OutgoingContent(text="")
        received = describe(recipient_jid, shown, "")
        kind = "composing" if typing else "paused"
        await session.record(dataclasses.replace(received, kind=kind), [])

    async def mark_read(
        self, key: InstanceKey, chat_jid: str, sender_jid: str, message_ids: list[str]
    ) -> None:
        session = self._connected(key)
        shown = describe(chat_jid, OutgoingContent(text=""), "")
        read = dataclasses.replace(shown, kind="read", target_message_id=",".join(message_ids))
        await session.record(read, [])

    async def send_presence(self, key: InstanceKey, chat_jid: str, presence: str) -> None:
        session = self._connected(key)
        shown = describe(chat_jid, OutgoingContent(text=""), "")
        await session.record(dataclasses.replace(shown, kind=presence), [])
        if presence == "subscribe":
            session.subscribed.add(chat_jid)
            self._presence.remember(key, chat_jid)

    async def reject_call(self, key: InstanceKey, caller_jid: str, call_id: str) -> None:
        session = self._connected(key)
        shown = describe(caller_jid, OutgoingContent(text=""), "")
        rejected = dataclasses.replace(shown, kind="call_rejected", target_message_id=call_id)
        await session.record(rejected, [])

    async def download_media(self, key: InstanceKey, media_ref: str) -> bytes:
        self._connected(key)
        data = self._media_server.get(media_ref)
        if data is None:
            raise EngineError("the media is no longer on WhatsApp's servers")
        return data

    async def contacts(self, key: InstanceKey) -> list[Contact]:
        session = self._connected(key)
        return await asyncio.to_thread(session.address_book.all)

    async def check_numbers(self, key: InstanceKey, phones: list[str]) -> list[NumberCheck]:
        self._connected(key)
        checks = []
        for phone in phones:
            user = phone.lstrip("+")
            on_whatsapp = self._is_registered(key, user)
            jid = f"{user}@s.whatsapp.net" if on_whatsapp else ""
            checks.append(NumberCheck(phone, on_whatsapp, jid))
        return checks

    # Groups (sessions/sim_groups.py): each call runs on a thread; its events are reported
    # here, on the loop.

    def _groups(self, key: InstanceKey) -> SimGroups:
        session = self._connected(key)
        jid = session.device.jid if session.device is not None else None
        if not jid:
            raise NotConnected("the instance is not paired")
        me = jid.partition(":")[0] + "@s.whatsapp.net"
        return SimGroups(
            key,
            session.store,
            me,
            registered=lambda user: self._is_registered(key, user),
            refuses_adds=lambda user: (key, user) in self._refusing_adds,
        )

    async def _group_change(self, call: Callable[[], tuple[T, list[ev.GroupChanged]]]) -> T:
        async with self._group_lock:
            result, changes = await asyncio.to_thread(call)
        for change in changes:
            self.sink(change)
        return result

    async def list_groups(self, key: InstanceKey) -> list[GroupInfo]:
        return await asyncio.to_thread(self._groups(key).all_groups)

    async def group_info(self, key: InstanceKey, group_jid: str) -> GroupInfo:
        return await asyncio.to_thread(self._groups(key).info, group_jid)

    async def create_group(
        self, key: InstanceKey, name: str, phones: list[str]
    ) -> tuple[GroupInfo, list[ParticipantOutcome]]:
        groups = self._groups(key)
        return await self._group_change(lambda: groups.create(name, phones))

    async def update_participants(
        self, key: InstanceKey, group_jid: str, action: str, phones: list[str]
    ) -> list[ParticipantOutcome]:
        groups = self._groups(key)
        return await self._group_change(lambda: groups.update(group_jid, action, phones))

    async def set_group_name(self, key: InstanceKey, group_jid: str, name: str) -> None:
        groups = self._groups(key)
        await self._group_change(lambda: (None, groups.set_name(group_jid, name)))

    async def set_group_topic(self, key: InstanceKey, group_jid: str, topic: str) -> None:
        groups = self._groups(key)
        await self._group_change(lambda: (None, groups.set_topic(group_jid, topic)))

    async def set_group_settings(
        self, key: InstanceKey, group_jid: str, announce: bool | None, locked: bool | None
    ) -> None:
        groups = self._groups(key)
        await self._group_change(lambda: (None, groups.set_settings(group_jid, announce, locked)))

    async def set_group_photo(self, key: InstanceKey, group_jid: str, data: bytes) -> str:
        groups = self._groups(key)
        return await self._group_change(lambda: (groups.set_photo(group_jid), []))

    async def join_requests(self, key: InstanceKey, group_jid: str) -> list[JoinRequest]:
        return await asyncio.to_thread(self._groups(key).join_requests, group_jid)

    async def invite_link(self, key: InstanceKey, group_jid: str, revoke: bool) -> str:
        groups = self._groups(key)
        return await self._group_change(lambda: (groups.invite_link(group_jid, revoke), []))

    async def preview_invite(self, key: InstanceKey, code: str) -> GroupInfo:
        return await asyncio.to_thread(self._groups(key).preview, code)

    async def join_group(self, key: InstanceKey, code: str) -> str:
        groups = self._groups(key)
        return await self._group_change(lambda: groups.join(code))

    async def leave_group(self, key: InstanceKey, group_jid: str) -> None:
        groups = self._groups(key)
        await self._group_change(lambda: (None, groups.leave(group_jid)))

    async def group_action(self, key: InstanceKey, args: dict[str, Any]) -> None:
        """SimulatorService: numbers refuse adds (`refuse_adds`), or another phone changes a
        group (SimGroups.act)."""
        if "refuse_adds" in args:
            for phone in args["phones"]:
                entry = (key, str(phone).lstrip("+"))
                if args["refuse_adds"]:
                    self._refusing_adds.add(entry)
                else:
                    self._refusing_adds.discard(entry)
            return
        groups = self._groups(key)
        await self._group_change(lambda: (None, groups.act(args)))

    def _is_registered(self, key: InstanceKey, user: str) -> bool:
        registered = self._registered.get(key)
        return registered is None or user in registered

    def fail_sends(self, key: InstanceKey, phones: list[str], code: str) -> None:
        for phone in phones:
            if code:
                self._failing[(key, phone.lstrip("+"))] = code
            else:
                self._failing.pop((key, phone.lstrip("+")), None)

    async def start(self, spec: InstanceSpec) -> None:
        if spec.key in self._sessions:
            return
        session = SimSession(
            spec,
            self.timings,
            self._report,
            lambda: self._on_connected(spec.key),
            self.server,
            files=self._files,
        )
        session.on_end = lambda event: self._server_ended(session, event)
        session.task = asyncio.create_task(self._run(session), name=f"sim {spec.key}")
        self._sessions[spec.key] = session

    async def _run(self, session: SimSession) -> None:
        try:
            await session.run()
        finally:
            # The run ended by itself (QR timeout, ban): the instance is no longer hosted.
            if self._sessions.get(session.key) is session:
                del self._sessions[session.key]

    async def stop(self, key: InstanceKey) -> None:
        session = self._sessions.pop(key, None)
        if session is not None:
            await session.cancel()

    async def logout(self, key: InstanceKey) -> None:
        self._presence.forget(key)
        session = self._sessions.pop(key, None)
        if session is not None:
            await session.cancel()
            await asyncio.to_thread(session.store.wipe)

    async def pair_phone(self, key: InstanceKey, phone: str) -> PairCode:
        code = self._session(key).new_pair_code(phone)
        return PairCode(code, self.timings.pair_code_seconds)

    def hosted(self) -> int:
        return len(self._sessions)

    async def close(self) -> None:
        for key in list(self._sessions):
            await self.stop(key)
        for task in list(self._renewals):
            task.cancel()
        await asyncio.gather(*self._renewals, return_exceptions=True)

    # The phone side, driven by SimulatorService.

    def _session(self, key: InstanceKey) -> SimSession:
        session = self._sessions.get(key)
        if session is None:
            raise NotRunning("the instance is not running; call Connect first")
        return session

    def _connected(self, key: InstanceKey) -> SimSession:
        session = self._session(key)
        if not session.connected:
            raise NotConnected("the instance is not connected")
        return session

    async def scan_qr(self, key: InstanceKey, code: str, phone: str) -> None:
        session = self._session(key)
        session.scan_qr(code)
        await session.link(phone)

    async def enter_pair_code(self, key: InstanceKey, code: str) -> None:
        session = self._session(key)
        await session.link(session.check_pair_code(code))

    async def drop_connection(self, key: InstanceKey) -> None:
        await self._end(self._connected(key), ev.Disconnected(key, "simulated network drop"))

    async def logout_from_phone(self, key: InstanceKey) -> None:
        session = self._connected(key)
        self._presence.forget(key)
        await asyncio.to_thread(session.store.wipe)
        await self._end(session, ev.LoggedOut(key, "device removed on the phone"))

    async def temporary_ban(self, key: InstanceKey, code: int, expires_in: float) -> None:
        session = self._connected(key)
        await asyncio.to_thread(session.store.save_ban, time.time() + expires_in)
        await self._end(session, ev.TemporarilyBanned(key, code, expires_in))

    async def stream_replaced(self, key: InstanceKey) -> None:
        await self._end(self._connected(key), ev.StreamReplaced(key))

    async def set_keepalive(self, key: InstanceKey, failing: bool) -> None:
        self._connected(key).set_keepalive(failing)

    async def inject_event(self, event: ev.EngineEvent) -> None:
        """Another phone's presence, chat presence or call reaches the connected instance. A
        presence reaches it only while this connection is subscribed to the contact, as on
        WhatsApp (chat presences and calls need no subscription)."""
        session = self._connected(event.key)
        if isinstance(event, ev.PresenceChanged) and not (
            {event.jid, event.lid} & session.subscribed
        ):
            raise Rejected(
                f"the instance is not subscribed to the presence of {event.jid}: WhatsApp "
                "sends it only after SubscribePresence on the current connection"
            )
        self.sink(event)

    async def inject_message(self, message: ev.MessageReceived, media: bytes) -> None:
        """A message from someone else's phone reaches the instance; its media goes to the
        media servers first, as WhatsApp's clients upload it before sending."""
        session = self._connected(message.key)
        if media:
            ref = secrets.token_urlsafe(16)
            self._media_server[ref] = media
            message = dataclasses.replace(
                message,
                media_ref=ref,
                media_size=len(media),
                media_sha256=hashlib.sha256(media).hexdigest(),
            )
        if message.sender_lid and message.sender_jid.endswith("@s.whatsapp.net"):
            self._lids.setdefault(message.key, {})[message.sender_jid] = message.sender_lid
        if message.push_name and not message.from_me:
            await asyncio.to_thread(
                session.address_book.note_push_name,
                message.sender_jid,
                "+" + message.sender_jid.split("@")[0],
                message.sender_lid,
                message.push_name,
            )
        self.sink(message)

    async def send_receipt(
        self, key: InstanceKey, message_ids: list[str], kind: str, chat_jid: str
    ) -> None:
        self._connected(key)
        self._report(ev.Receipt(key, tuple(message_ids), kind, chat_jid))

    def _report(self, event: ev.EngineEvent) -> None:
        """What a session reports, with what this simulated WhatsApp knows of a receipt's
        sender (its phone JID is the chat of a direct message; its LID from the LID map)."""
        if isinstance(event, ev.Receipt) and not event.from_jid and "@g.us" not in event.chat:
            lid = self._lids.get(event.key, {}).get(event.chat, "")
            event = dataclasses.replace(event, from_jid=event.chat, from_lid=lid)
        self.sink(event)

    async def set_contacts(self, key: InstanceKey, contacts: list[Contact]) -> None:
        session = self._connected(key)
        await asyncio.to_thread(session.address_book.replace, contacts)

    def preload_history(self, key: InstanceKey, synced: ev.HistorySynced) -> None:
        """The phone's history, sent as a history sync once the instance is connected (at
        once if it is): as WhatsApp sends a newly linked device its recent chats."""
        self._history.setdefault(key, []).append(synced)
        session = self._sessions.get(key)
        if session is not None and session.connected:
            self._deliver_history(key)

    def _on_connected(self, key: InstanceKey) -> None:
        self._deliver_history(key)
        if self._presence.of(key):
            renewing = self._presence.renew(
                key, lambda contact: self.send_presence(key, contact, "subscribe")
            )
            task = asyncio.create_task(renewing, name=f"presence renewal {key}")
            self._renewals.add(task)
            task.add_done_callback(self._renewals.discard)

    def _deliver_history(self, key: InstanceKey) -> None:
        for synced in self._history.pop(key, []):
            self.sink(synced)

    def set_lid_mappings(self, key: InstanceKey, lids: dict[str, str]) -> None:
        """Phone-number JID -> LID, as whatsmeow's LID map learns them."""
        self._lids.setdefault(key, {}).update(lids)

    async def resolve_jids(self, key: InstanceKey, jids: list[str]) -> list[str]:
        session = self._connected(key)
        contacts = await asyncio.to_thread(session.address_book.all)
        lids = {c.jid: c.lid for c in contacts if c.lid} | self._lids.get(key, {})
        phones = {lid: jid for jid, lid in lids.items()}
        return [lids.get(jid) or phones.get(jid, "") for jid in jids]

    def set_registered(self, key: InstanceKey, phones: list[str]) -> None:
        if phones:
            self._registered[key] = frozenset(phone.lstrip("+") for phone in phones)
        else:
            self._registered.pop(key, None)

    def _server_ended(self, session: SimSession, event: ev.EngineEvent | None) -> None:
        """The simulated WhatsApp server kicked (stream replaced) or lost the connection: end
        it as the in-worker commands do, on a task of its own (this runs inside the link)."""
        if event is None or self._sessions.get(session.key) is not session:
            return  # closed here, or a newer session of the instance runs by now
        task = asyncio.create_task(self._end(session, event))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _end(self, session: SimSession, event: ev.EngineEvent) -> None:
        """The server ended the connection: report why, and stop hosting the instance."""
        await self.stop(session.key)
        self.sink(event)
