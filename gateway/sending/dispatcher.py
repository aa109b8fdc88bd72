"""Drives the central send scheduler (ratelimit/): accepts messages into the durable outbox,
feeds the scheduler, hands released messages to the engines at most once, and moves message
states on results and receipts. Every state change commits with its event (the outbox's
journal), and every automatic pause goes through `pause`, persisted with its event.

At-most-once: a message stays QUEUED through its typing pause and is committed SENDING just
before the engine gets it. neonize cannot send with a caller-chosen id, so if the process
dies between that commit and WhatsApp's answer nobody can tell whether it went out; at the
next start such a message becomes DELIVERY_UNKNOWN and is never sent again. An engine that
answers "not running" or "not connected" had nothing reach WhatsApp: the message goes back
to the queue and counts as no failure."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from google.protobuf.message import Message

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.ops.logs import about_instance_key
from zapgate.gateway.rpc.errors import InstanceNotFound, InstanceNotRunning
from zapgate.gateway.sending.templates import render
from zapgate.gateway.sending.unowned import UnownedSends
from zapgate.gateway.sending.wakeup import Wakeup
from zapgate.gateway.store.fencing import NO_FENCING, Fenced, FenceToken, Fencing
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.tasks import TaskSet
from zapgate.ratelimit.decisions import AutoPause, Expiry, InstanceStats, Release
from zapgate.ratelimit.health import PauseRules
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy
from zapgate.ratelimit.scheduler import Scheduler
from zapgate.sessions.engine import ACTIONS, Media, MessageRef, OutgoingContent, SendResult
from zapgate.sessions.errors import (
    EngineError,
    MaybeSent,
    NotConnected,
    NotRunning,
    SendRefused,
    WorkerUnavailable,
)
from zapgate.sessions.pool import WorkerPool
from zapgate.v1 import event_pb2, instance_pb2, message_pb2

log = logging.getLogger(__name__)

M = message_pb2.MessageState
DELIVERED_FROM = (M.MESSAGE_STATE_SENT,)
READ_FROM = (M.MESSAGE_STATE_SENT, M.MESSAGE_STATE_DELIVERED)
COUNTERS_SAVE_SECONDS = 1.0
# A message whose engine was not running or not connected waits this long before its next try.
REQUEUE_DELAY_SECONDS = 2.0
# failure_reason codes (docs/messages.md; stable: clients compare them). FAILED messages carry
# the engine's refusal code (SendRefused.code: not_on_whatsapp, invalid_recipient,
# invalid_content, media_upload_failed, or WhatsApp's numeric error such as 463) or:
ENGINE_ERROR = "engine_error"
# DELIVERY_UNKNOWN messages (and GATEWAY_STOPPED from the store's recovery at a start):
NO_ANSWER = "no_answer"  # handed to WhatsApp, no answer came
WORKER_DIED = "worker_died"  # the engine worker died with it
GATEWAY_ERROR = "gateway_error"  # the gateway failed unexpectedly while handing it over
MAX_FAILURE_REASON = 200  # the columns' widths
MAX_FAILURE_DETAIL = 500


def policy_of(record: InstanceRecord) -> SendPolicy:
    if not record.send_policy:
        return DEFAULT_POLICY
    return SendPolicy(**{**dataclasses.asdict(DEFAULT_POLICY), **record.send_policy})


class DispatchObserver(Protocol):
    """Told what the dispatcher does (gateway/ops/metrics.py)."""

    def message_entered(self, state: int) -> None: ...

    def paused(self, reason: str) -> None: ...

    def release_lateness(self, seconds: float) -> None: ...


class NoObserver:
    def message_entered(self, state: int) -> None:
        pass

    def paused(self, reason: str) -> None:
        pass

    def release_lateness(self, seconds: float) -> None:
        pass


class Dispatcher:
    def __init__(
        self,
        messages: MessageRepository,
        instances: InstanceRepository,
        inbound: InboundRepository,
        pool: WorkerPool,
        events: EventLog,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        pause_rules: PauseRules | None = None,
        observer: DispatchObserver | None = None,
        fencing: Fencing = NO_FENCING,
        unowned: UnownedSends | None = None,
    ) -> None:
        self._events = events
        self._fencing = fencing  # cluster mode: the hand-off commits under the lease only
        self._unowned = unowned  # cluster mode: sends for instances no node serves
        self._messages = messages
        self._instances = instances
        self._inbound = inbound
        self._pool = pool
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter and spins, not crypto)
        self._observer = observer or NoObserver()
        self.scheduler = Scheduler(clock, self._rng, pause_rules)
        self._wake = Wakeup()
        self._sleeping_until: float | None = None  # when `run` looks again by itself
        self._tasks = TaskSet("dispatcher")
        self._configured: set[str] = set()
        self._known: dict[str, set[str]] = {}
        self._sending: dict[str, int] = {}  # instance key -> releases being carried out
        self._sends_ended = asyncio.Condition()

    # ---- life ---------------------------------------------------------------------------

    async def recover(self) -> None:
        """After a start, before `run`: queues what the outbox holds."""
        for message in await self._messages.recover():
            await self._schedule(message)

    async def adopt(self, tenant: str, instance_id: str) -> None:
        """Cluster mode: this node took the instance over. What its previous owner was
        handing to WhatsApp becomes DELIVERY_UNKNOWN; its queue is scheduled here."""
        fence = self._fencing.token(tenant, instance_id)
        for message in await self._messages.recover((tenant, instance_id), fence):
            await self._schedule(message)

    async def requeue(self, tenant: str, instance_id: str) -> None:
        """Cluster mode: another node committed a message for this instance, owned here, that
        this node's adoption may have missed: schedules the QUEUED ones it does not hold."""
        for message in await self._messages.queued((tenant, instance_id)):
            await self._schedule(message)  # one already held stays as it is

    async def hand_over(self, tenant: str, instance_id: str) -> None:
        """Cluster mode, before this node hands the instance to another: no new release,
        the sends under way end (each stays at most once), and the counters are saved
        under the lease still, so the next owner keeps the caps exactly."""
        key = f"{tenant}/{instance_id}"
        self.scheduler.set_ready(key, False)
        async with self._sends_ended:
            await self._sends_ended.wait_for(lambda: not self._sending.get(key))
        await self._save_counters({key})

    def release(self, tenant: str, instance_id: str) -> bool:
        """Cluster mode: this node lost the instance; its new owner sends its queue. True
        when its scheduler still held messages: one committed after the new owner's
        adoption read the outbox would be QUEUED forever unless that owner is told."""
        key = f"{tenant}/{instance_id}"
        held = self.scheduler.stats(key).queued > 0 if key in self._configured else False
        self.scheduler.forget(key)
        self._configured.discard(key)
        self._known.pop(key, None)
        return held

    async def stop(self) -> None:
        """After `run` was cancelled: lets in-flight sends finish, saves the counters."""
        await self._tasks.wait()
        await self._save_counters()

    # ---- accepting ----------------------------------------------------------------------

    async def accept(self, message: MessageRecord) -> tuple[MessageRecord, bool]:
        """Commits the message, then queues it: accepted means durable. In cluster mode the
        queue lives on the instance's owner node (a call on another is forwarded there); for
        an instance no node serves, the message waits in the shared outbox for the node that
        takes the instance next, as a single gateway's waits for a disconnected instance."""
        owned_at: FenceToken | None = None
        try:
            await self._fencing.ensure_owner(message.tenant, message.instance_id, claim=False)
            owned_at = self._fencing.token(message.tenant, message.instance_id)
            here = True
        except InstanceNotRunning:
            if self._unowned is None:
                raise
            here = False
        stored, created = await self._messages.create(message)  # with its QUEUED event
        if created:
            self._observer.message_entered(stored.state)
            # The commit is not fenced: the lease may have moved while it waited, and the
            # new owner's adoption may have read the outbox before it. Scheduled here only
            # if this node still holds the lease it checked; else as a send nobody served.
            scheduled = here and await self._schedule(stored, still=self._holding(stored, owned_at))
            if not scheduled and await self._unowned_now_here(stored):
                await self._schedule(stored)
        return stored, created

    def _holding(self, message: MessageRecord, owned_at: FenceToken | None) -> Callable[[], bool]:
        """Whether this node still holds the instance at the lease (epoch) `owned_at`."""

        def still() -> bool:
            try:
                return self._fencing.token(message.tenant, message.instance_id) == owned_at
            except Fenced:
                return False

        return still

    async def _unowned_now_here(self, message: MessageRecord) -> bool:
        if self._unowned is None:  # a single gateway owns every instance
            return True
        return await self._unowned.accepted_unowned(message.tenant, message.instance_id)

    async def cancel(self, message: MessageRecord) -> bool:
        """True if the message was still QUEUED. One released but still in its typing pause
        is QUEUED too: the send sees the cancel and stops before the engine."""
        self.scheduler.cancel(message.instance_key, message.id)
        cancelled = await self._transition(
            message.tenant,
            message.instance_id,
            message.id,
            M.MESSAGE_STATE_CANCELLED,
            from_states=[M.MESSAGE_STATE_QUEUED],
        )
        return cancelled is not None

    async def _schedule(
        self,
        message: MessageRecord,
        not_before: float = 0.0,
        still: Callable[[], bool] | None = None,
    ) -> bool:
        """False, scheduling nothing, when `still` (asked right before it enqueues, with no
        await in between, so a release cannot come after it) says no."""
        await self._configure(message.tenant, message.instance_id)
        # A reaction, edit or revoke acts on a message of the chat: never a new contact, no
        # typing before it, and no receipt of its own to wait for.
        action = message.kind in ACTIONS
        known = action or message.recipient_jid in await self._known_contacts(message.instance_key)
        if self.scheduler.holds(message.instance_key, message.id):
            # Cluster mode: a send accepted here while this node adopted the instance is
            # scheduled by whichever of the two got here first.
            return True
        if still is not None and not still():
            return False
        self.scheduler.enqueue(
            Outgoing(
                message_id=message.id,
                instance=message.instance_key,
                recipient=message.recipient_jid,
                text_length=0 if action else len(str(message.content.get("text", ""))),
                priority=message.priority,
                seq=message.seq,
                not_before=max(message.send_at_us / 1e6, not_before),
                expires_at=message.expire_us / 1e6 if message.expire_us else None,
                known_contact=known,
                tracks_delivery=not action,
            )
        )
        self._wake_if_sooner()
        return True

    def _wake_if_sooner(self) -> None:
        """Wakes `run` when the scheduler now has something to do before it would look
        again by itself (not for every accepted message: most wait for a later gap)."""
        wake_at = self.scheduler.next_wakeup()
        if wake_at is not None and (self._sleeping_until is None or wake_at < self._sleeping_until):
            self._wake.set()

    async def _known_contacts(self, instance_key: str) -> set[str]:
        """Who is no new contact of this instance: everyone it ever sent to, and everyone
        who wrote to it (answering a lead is not a cold message). Loaded once."""
        known = self._known.get(instance_key)
        if known is None:
            tenant, _, instance_id = instance_key.partition("/")
            sent_to = await self._messages.sent_recipients(tenant, instance_id)
            wrote = await self._inbound.correspondents(tenant, instance_id)
            known = self._known.setdefault(instance_key, set())
            known |= sent_to | wrote
        return known

    def wrote_to_us(self, instance_key: str, jid: str) -> None:
        """Someone wrote to the instance (the inbox committed it): a known contact now."""
        known = self._known.get(instance_key)
        if known is not None:  # otherwise loaded from the store when first needed
            known.add(jid)

    async def require_instance(self, tenant: str, instance_id: str) -> None:
        """Raises InstanceNotFound; instances the dispatcher already knows cost no query."""
        await self._configure(tenant, instance_id)

    async def _configure(
        self,
        tenant: str,
        instance_id: str,
        force: bool = False,
        record: InstanceRecord | None = None,
    ) -> None:
        """`record`: the instance as just stored, when the caller has it (no read)."""
        key = f"{tenant}/{instance_id}"
        if key in self._configured and not force:
            return
        if record is None:
            record = await self._instances.require(tenant, instance_id)
        self.scheduler.configure(key, policy_of(record), record.create_time_us / 1e6)
        if key not in self._configured and record.scheduler_state:
            self.scheduler.import_state(key, dict(record.scheduler_state))
        # The stored pause reason is the truth (PauseSending/ResumeSending and auto-pauses
        # all persist it), whatever the imported counters say.
        if record.sending_paused_reason:
            self.scheduler.pause(key, record.sending_paused_reason)
        else:
            self.scheduler.resume(key)
        self.scheduler.set_ready(key, record.state == instance_pb2.INSTANCE_STATE_CONNECTED)
        self._configured.add(key)
        self._wake.set()

    # ---- instance changes ---------------------------------------------------------------

    async def policy_changed(self, tenant: str, instance_id: str) -> None:
        await self._configure(tenant, instance_id, force=True)

    async def state_changed(self, record: InstanceRecord) -> None:
        """The supervisor reports every transition: only a connected instance sends; a ban or
        a logout pauses sending until someone resumes it."""
        await self._configure(record.tenant, record.id, record=record)
        self.scheduler.set_ready(record.key, record.state == instance_pb2.INSTANCE_STATE_CONNECTED)
        if record.state == instance_pb2.INSTANCE_STATE_BANNED:
            await self.pause(record.tenant, record.id, f"temporary_ban_{record.ban_code}")
        elif record.state == instance_pb2.INSTANCE_STATE_LOGGED_OUT:
            await self.pause(record.tenant, record.id, "logged_out")
        self._wake.set()

    async def pause(self, tenant: str, instance_id: str, reason: str) -> InstanceRecord:
        """Pauses sending, by hand or automatically (every automatic pause comes here): the
        reason is persisted with its event, so it outlives a restart until resumed."""
        await self._fencing.refuse_other_owner(tenant, instance_id)  # its scheduler is there
        await self._configure(tenant, instance_id)
        self.scheduler.pause(f"{tenant}/{instance_id}", reason)
        log.warning("sending paused on %s/%s: %s", tenant, instance_id, reason)
        self._observer.paused(reason)
        return await self._save_pause(
            tenant, instance_id, reason, event_pb2.SendingPaused(reason=reason)
        )

    async def resume(self, tenant: str, instance_id: str) -> InstanceRecord:
        await self._fencing.refuse_other_owner(tenant, instance_id)
        await self._configure(tenant, instance_id)
        self.scheduler.resume(f"{tenant}/{instance_id}")
        log.info("sending resumed on %s/%s", tenant, instance_id)
        self._wake.set()
        return await self._save_pause(tenant, instance_id, "", event_pb2.SendingResumed())

    async def _save_pause(
        self, tenant: str, instance_id: str, reason: str, event: Message
    ) -> InstanceRecord:
        row = self._events.row(tenant, instance_id, event)
        record = await self._instances.update(
            tenant, instance_id, {"sending_paused_reason": reason}, events=[row]
        )
        self._events.committed()
        return record

    async def stats(self, tenant: str, instance_id: str) -> InstanceStats:
        await self._configure(tenant, instance_id)
        return self.scheduler.stats(f"{tenant}/{instance_id}")

    async def receipt_rates(self, tenant: str, instance_id: str) -> tuple[float, float]:
        return await self._messages.receipt_rates(tenant, instance_id)

    async def forget(self, tenant: str, instance_id: str) -> None:
        self.scheduler.forget(f"{tenant}/{instance_id}")
        self._configured.discard(f"{tenant}/{instance_id}")
        self._known.pop(f"{tenant}/{instance_id}", None)
        await self._messages.delete_instance(tenant, instance_id)

    async def on_receipt(
        self,
        instance_key: str,
        message_ids: tuple[str, ...],
        kind: str,
        receipt_from: tuple[str, str] = ("", ""),
    ) -> None:
        """Receipts of one instance move only that instance's messages (a WhatsApp id is
        unique only within its account). `receipt_from`: who sent it (phone JID, LID)."""
        to_state, from_states = (
            (M.MESSAGE_STATE_DELIVERED, DELIVERED_FROM)
            if kind == "delivered"
            else (M.MESSAGE_STATE_READ, READ_FROM)
        )
        tenant, _, instance_id = instance_key.partition("/")
        moved = await self._messages.advance_by_whatsapp_ids(
            tenant, instance_id, message_ids, to_state, from_states, receipt_from
        )
        for left, message in moved:
            self._observer.message_entered(message.state)
            if left == M.MESSAGE_STATE_SENT:  # its first receipt: it arrived
                reason = self.scheduler.on_receipt(instance_key, message.id)
                if reason:  # too few deliveries lately
                    await self.pause(tenant, instance_id, reason)

    # ---- sending ------------------------------------------------------------------------

    async def run(self) -> None:
        """The dispatch loop (supervised by the gateway; safe to restart: its state is the
        scheduler's)."""
        last_save = self._clock()
        while True:
            wake_at = self.scheduler.next_wakeup()
            delay = 1.0 if wake_at is None else max(0.0, wake_at - self._clock())
            sleep = min(delay, COUNTERS_SAVE_SECONDS)
            self._sleeping_until = self._clock() + sleep
            await self._wake.wait(sleep)
            self._sleeping_until = None
            for decision in self.scheduler.due():
                key = _instance_of(decision)
                self._sending[key] = self._sending.get(key, 0) + 1  # under way from now on
                self._tasks.spawn(self._carry_out(decision))
            if self._clock() - last_save >= COUNTERS_SAVE_SECONDS:
                await self._save_counters()
                last_save = self._clock()

    async def _carry_out(self, decision: Release | Expiry | AutoPause) -> None:
        """Counted in `_sending` by `run` until it ends (a hand-over waits for it)."""
        key = _instance_of(decision)
        try:
            with about_instance_key(key):  # its log lines (and its tasks') name the instance
                await self._decide(decision)
        finally:
            self._wake.set()  # a finished send or failure may make the next message due
            self._sending[key] -= 1
            if not self._sending[key]:
                del self._sending[key]
                async with self._sends_ended:
                    self._sends_ended.notify_all()

    async def _decide(self, decision: Release | Expiry | AutoPause) -> None:
        if isinstance(decision, AutoPause):
            tenant, _, instance_id = decision.instance.partition("/")
            await self.pause(tenant, instance_id, decision.reason)
        elif isinstance(decision, Expiry):
            tenant, _, instance_id = decision.message.instance.partition("/")
            await self._transition(
                tenant,
                instance_id,
                decision.message.message_id,
                M.MESSAGE_STATE_EXPIRED,
                from_states=[M.MESSAGE_STATE_QUEUED],
            )
        else:
            await self._send(decision)

    async def _send(self, release: Release) -> None:
        """Carries out one release. Whatever happens, the scheduler hears how it ended, so
        the instance's in-flight slot is never left taken."""
        self._observer.release_lateness(self._clock() - release.scheduled_at)
        outgoing = release.message
        tenant, _, instance_id = outgoing.instance.partition("/")
        landed = False
        try:
            message = await self._messages.get(tenant, instance_id, outgoing.message_id)
            if message is None or message.state != M.MESSAGE_STATE_QUEUED:
                return  # cancelled or gone in the meantime
            content = self._content(message)
            if release.typing_seconds > 0:  # still QUEUED: a crash now loses nothing
                await self._show_typing(message, release.typing_seconds)
            try:
                sending = await self._transition(
                    tenant,
                    instance_id,
                    message.id,
                    M.MESSAGE_STATE_SENDING,
                    from_states=[M.MESSAGE_STATE_QUEUED],
                    fence=self._fencing.token(tenant, instance_id),
                )
            except Fenced as fenced:  # another node owns it now: it stays QUEUED for it
                log.warning("%s not handed over: %s", message.id, fenced)
                self._fencing.lost(tenant, instance_id)
                return
            if sending is None:  # cancelled during the typing pause
                return
            # Saved now, with the message in flight: a crash from here on counts it as
            # sent, so no cap can be exceeded after a restart.
            await self._save_counters({outgoing.instance})
            landed = True
            await self._hand_over(sending, content)
        finally:
            if not landed:
                self.scheduler.on_not_sent(outgoing.instance, outgoing.message_id)

    async def _show_typing(self, message: MessageRecord, seconds: float) -> None:
        """Typing is decoration: when it fails, the message is sent all the same."""
        try:
            await self._pool.set_typing(message.instance_key, message.recipient_jid, True)
        except EngineError as error:
            log.info("typing not shown before %s: %s", message.id, error)
        await asyncio.sleep(seconds)

    async def _hand_over(self, message: MessageRecord, content: OutgoingContent) -> None:
        """Sends a SENDING message through its engine and settles it by the outcome."""
        result = await self._engine_send(message, content)
        if result is not None:
            await self._sent(message, result, content)

    async def _engine_send(
        self, message: MessageRecord, content: OutgoingContent
    ) -> SendResult | None:
        """The engine's result; None when the message was settled otherwise."""
        try:
            return await self._pool.send(message.instance_key, message.recipient_jid, content)
        except (NotRunning, NotConnected) as error:
            await self._requeue(message, str(error))
        except WorkerUnavailable as error:
            if error.in_flight:  # the worker died with the message: it may have gone out
                await self._unknown(message, WORKER_DIED, "the engine worker died while sending it")
            else:
                await self._requeue(message, str(error))
        except SendRefused as error:
            await self._failed(message, error.code, str(error))
        except MaybeSent as error:
            await self._unknown(message, NO_ANSWER, str(error))
        except EngineError as error:
            await self._failed(message, ENGINE_ERROR, str(error))
        except Exception:
            # Nobody can tell how far it got: never send it again.
            log.exception("sending %s failed unexpectedly", message.id)
            await self._unknown(
                message, GATEWAY_ERROR, "the gateway failed while handing it to WhatsApp"
            )
        return None

    async def _sent(
        self, message: MessageRecord, result: SendResult, content: OutgoingContent
    ) -> None:
        key = message.instance_key
        self.scheduler.on_sent(key, message.id)
        (await self._known_contacts(key)).add(message.recipient_jid)
        self._wake.set()  # the instance's next message may be due now
        await self._transition(
            message.tenant,
            message.instance_id,
            message.id,
            M.MESSAGE_STATE_SENT,
            from_states=[M.MESSAGE_STATE_SENDING],
            whatsapp_message_id=result.message_id,
            sent_time_us=int(result.timestamp * 1e6),
            **_sent_text(message, content),
        )
        # Counters are saved with every send, so caps hold across a crash too.
        await self._save_counters({key})

    async def _requeue(self, message: MessageRecord, why: str) -> None:
        """Nothing reached WhatsApp: back to the queue, a little later (the supervisor
        learns of the lost connection at about the same time)."""
        log.info("%s goes back to the queue: %s", message.id, why)
        self.scheduler.on_not_sent(message.instance_key, message.id)
        moved = await self._transition(
            message.tenant,
            message.instance_id,
            message.id,
            M.MESSAGE_STATE_QUEUED,
            from_states=[M.MESSAGE_STATE_SENDING],
        )
        if moved is not None:
            await self._schedule(moved, not_before=self._clock() + REQUEUE_DELAY_SECONDS)

    async def _unknown(self, message: MessageRecord, code: str, why: str) -> None:
        """It may have gone out: DELIVERY_UNKNOWN, and counted as sent, so caps and the
        new-contact count stay on the safe side."""
        self.scheduler.on_sent(message.instance_key, message.id)
        (await self._known_contacts(message.instance_key)).add(message.recipient_jid)
        await self._transition(
            message.tenant,
            message.instance_id,
            message.id,
            M.MESSAGE_STATE_DELIVERY_UNKNOWN,
            from_states=[M.MESSAGE_STATE_SENDING],
            failure_reason=code[:MAX_FAILURE_REASON],
            failure_detail=why[:MAX_FAILURE_DETAIL],
        )
        await self._save_counters({message.instance_key})

    async def _failed(self, message: MessageRecord, code: str, why: str) -> None:
        reason = self.scheduler.on_failed(message.instance_key, message.id, code)
        await self._transition(
            message.tenant,
            message.instance_id,
            message.id,
            M.MESSAGE_STATE_FAILED,
            from_states=[M.MESSAGE_STATE_SENDING],
            failure_reason=code[:MAX_FAILURE_REASON],
            failure_detail=why[:MAX_FAILURE_DETAIL],
        )
        if reason:
            await self.pause(message.tenant, message.instance_id, reason)

    async def _transition(
        self,
        tenant: str,
        instance_id: str,
        message_id: str,
        to_state: int,
        *,
        from_states: list[int],
        **changes: Any,
    ) -> MessageRecord | None:
        """Moves a message's state, committed with its event; None if it was not in
        `from_states`."""
        moved = await self._messages.transition(
            tenant, instance_id, message_id, to_state, from_states=from_states, **changes
        )
        if moved is not None:
            self._observer.message_entered(moved.state)
        return moved

    def _content(self, message: MessageRecord) -> OutgoingContent:
        """The stored message as the engine sends it; spins are picked now."""
        body = dict(message.content)
        for given in ("reply_to", "mention_phones", "target_id", "sent_text"):
            body.pop(given, None)  # as the caller named them: for the API, not the engine
        for ref in ("quote", "target"):
            if ref in body:
                body[ref] = MessageRef(**body[ref])
        for listed in ("mentions", "poll_options"):  # JSON lists; the engine takes tuples
            if listed in body:
                body[listed] = tuple(body[listed])
        if message.kind in ACTIONS:
            body["action"] = message.kind
            body["reaction_emoji"] = body.pop("emoji", "")
            body["text"] = body.pop("edit_text", "")
            return OutgoingContent(**body)
        variables = body.pop("variables", {})
        for field in ("text", "caption"):
            if body.get(field):
                body[field] = render(body[field], variables, self._rng)
        caption = body.pop("caption", "")
        media_fields = {
            "mime_type": body.pop("mime_type", ""),
            "file_name": body.pop("file_name", ""),
        }
        kind = message.kind if message.kind != "voice_note" else "audio"
        if kind in ("image", "video", "audio", "document", "sticker"):
            body[kind] = Media(message.media or b"", caption=caption, **media_fields)
        elif body.get("link_url"):  # a text's media is its link preview's thumbnail
            body["link_thumbnail"] = message.media or b""
        return OutgoingContent(**body)

    async def _save_counters(self, keys: set[str] | None = None) -> None:
        """Stores the scheduler's counters of `keys` (default: every changed instance). An
        instance stays marked changed until its counters are stored as they are now."""
        for key in self.scheduler.dirty() if keys is None else keys:
            tenant, _, instance_id = key.partition("/")
            if not self.scheduler.configured(key):  # released during an earlier save
                self.scheduler.mark_saved(key)  # (its hand-over saved them, or it was lost)
                continue
            state = self.scheduler.export_state(key)
            try:
                fence = self._fencing.token(tenant, instance_id)
                await self._instances.update(
                    tenant, instance_id, {"scheduler_state": state}, fence=fence
                )
            except InstanceNotFound:  # deleted meanwhile: nothing left to save
                self.scheduler.mark_saved(key)
                continue
            except Fenced:  # cluster mode: another node owns it, its counters are its own
                self.scheduler.mark_saved(key)
                self._fencing.lost(tenant, instance_id)
                continue
            except Exception:
                log.warning("counters of %s not saved; retrying later", key, exc_info=True)
                continue
            # Released meanwhile (handed over, lost), or nothing changed meanwhile: saved.
            if not self.scheduler.configured(key) or self.scheduler.export_state(key) == state:
                self.scheduler.mark_saved(key)


def _instance_of(decision: Release | Expiry | AutoPause) -> str:
    return decision.instance if isinstance(decision, AutoPause) else decision.message.instance


def _sent_text(message: MessageRecord, content: OutgoingContent) -> dict[str, Any]:
    """The text or caption as sent (spins picked), kept for replies that quote it."""
    media = content.image or content.video or content.document
    text = media.caption if media is not None else content.text
    if not text or message.kind in ACTIONS:
        return {}
    return {"content": {**message.content, "sent_text": text}}
