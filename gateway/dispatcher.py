"""Drives the central send scheduler (ratelimit/): accepts messages into the durable outbox,
feeds the scheduler, hands released messages to the engines at most once, and moves message
states on results and receipts.

At-most-once: a message is committed SENDING before the engine sees it. neonize cannot send
with a caller-chosen id, so if the process dies between that commit and WhatsApp's answer
nobody can tell whether it went out; at the next start such a message becomes
DELIVERY_UNKNOWN and is never sent again."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from zapgate.gateway.eventlog import EventLog
from zapgate.gateway.logs import about_instance_key
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.gateway.store.schema import events as events_table
from zapgate.gateway.tasks import TaskSet
from zapgate.gateway.templates import render
from zapgate.gateway.wakeup import Wakeup
from zapgate.ratelimit.decisions import AutoPause, Expiry, InstanceStats, Release
from zapgate.ratelimit.health import PauseRules
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy
from zapgate.ratelimit.scheduler import Scheduler
from zapgate.sessions.engine import Media, OutgoingContent
from zapgate.sessions.pool import EngineCallFailed, WorkerPool, WorkerUnavailable
from zapgate.v1 import event_pb2, instance_pb2, message_pb2

log = logging.getLogger(__name__)

M = message_pb2.MessageState
DELIVERED_FROM = (M.MESSAGE_STATE_SENT,)
READ_FROM = (M.MESSAGE_STATE_SENT, M.MESSAGE_STATE_DELIVERED)
COUNTERS_SAVE_SECONDS = 1.0


def policy_of(record: InstanceRecord) -> SendPolicy:
    if not record.send_policy:
        return DEFAULT_POLICY
    return SendPolicy(**{**dataclasses.asdict(DEFAULT_POLICY), **record.send_policy})


class QueuedEvents:
    """Each new message's QUEUED event, committed with the message itself."""

    table = events_table

    def __init__(self, events: EventLog) -> None:
        self._events = events

    def rows(self, created: list[MessageRecord]) -> list[dict[str, object]]:
        return [self._row(message) for message in created]

    def _row(self, message: MessageRecord) -> dict[str, object]:
        return self._events.row(message.tenant, message.instance_id, state_event(message))

    def committed(self) -> None:
        self._events.committed()


def state_event(message: MessageRecord) -> event_pb2.MessageStateChanged:
    return event_pb2.MessageStateChanged(
        message_id=message.id,
        state=message.state,  # type: ignore[arg-type]
        failure_reason=message.failure_reason,
        recipient_jid=message.recipient_jid,
        whatsapp_message_id=message.whatsapp_message_id,
    )


class Dispatcher:
    def __init__(
        self,
        messages: MessageRepository,
        instances: InstanceRepository,
        pool: WorkerPool,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        events: EventLog | None = None,
        pause_rules: PauseRules | None = None,
    ) -> None:
        self._events = events
        self._messages = messages
        if events is not None:
            messages.companion = QueuedEvents(events)
        self._instances = instances
        self._pool = pool
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter and spins, not crypto)
        self.scheduler = Scheduler(clock, self._rng, pause_rules)
        self._wake = Wakeup()
        self._sleeping_until: float | None = None  # when `_run` looks again by itself
        self._tasks = TaskSet("dispatcher")
        self._configured: set[str] = set()
        self._known: dict[str, set[str]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        # Hooks for metrics (gateway/metrics.py): a message entered a state; sending paused
        # (the reason); a release came this many seconds after the scheduler planned it.
        self.on_message_state: Callable[[int], None] = _ignore
        self.on_pause: Callable[[str], None] = _ignore
        self.on_release_lateness: Callable[[float], None] = _ignore

    # ---- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        for message in await self._messages.recover():
            await self._schedule(message)
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._tasks.wait()
        await self._save_counters()

    # ---- accepting ----------------------------------------------------------------------

    async def accept(self, message: MessageRecord) -> tuple[MessageRecord, bool]:
        """Commits the message, then queues it: accepted means durable."""
        stored, created = await self._messages.create(message)  # with its QUEUED event
        if created:
            self.on_message_state(stored.state)
            await self._schedule(stored)
        return stored, created

    async def cancel(self, message: MessageRecord) -> bool:
        if not self.scheduler.cancel(message.instance_key, message.id):
            return False
        return await self._transition(
            message.id, M.MESSAGE_STATE_CANCELLED, from_states=[M.MESSAGE_STATE_QUEUED]
        )

    async def _schedule(self, message: MessageRecord) -> None:
        await self._configure(message.tenant, message.instance_id)
        known = message.recipient_jid in await self._known_contacts(message.instance_key)
        self.scheduler.enqueue(
            Outgoing(
                message_id=message.id,
                instance=message.instance_key,
                recipient=message.recipient_jid,
                text_length=len(str(message.content.get("text", ""))),
                priority=message.priority,
                seq=message.seq,
                not_before=message.send_at_us / 1e6,
                expires_at=message.expire_us / 1e6 if message.expire_us else None,
                known_contact=known,
            )
        )
        self._wake_if_sooner()

    def _wake_if_sooner(self) -> None:
        """Wakes `_run` when the scheduler now has something to do before it would look
        again by itself (not for every accepted message: most wait for a later gap)."""
        wake_at = self.scheduler.next_wakeup()
        if wake_at is not None and (self._sleeping_until is None or wake_at < self._sleeping_until):
            self._wake.set()

    async def _known_contacts(self, instance_key: str) -> set[str]:
        """Recipients this instance ever sent to (not new contacts), loaded once."""
        known = self._known.get(instance_key)
        if known is None:
            tenant, _, instance_id = instance_key.partition("/")
            known = self._known[instance_key] = await self._messages.sent_recipients(
                tenant, instance_id
            )
        return known

    async def require_instance(self, tenant: str, instance_id: str) -> None:
        """Raises InstanceNotFound; instances the dispatcher already knows cost no query."""
        await self._configure(tenant, instance_id)

    async def _configure(self, tenant: str, instance_id: str, force: bool = False) -> None:
        key = f"{tenant}/{instance_id}"
        if key in self._configured and not force:
            return
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
        await self._configure(record.tenant, record.id)
        self.scheduler.set_ready(record.key, record.state == instance_pb2.INSTANCE_STATE_CONNECTED)
        if record.state == instance_pb2.INSTANCE_STATE_BANNED:
            await self.pause(record.tenant, record.id, f"temporary_ban_{record.ban_code}")
        elif record.state == instance_pb2.INSTANCE_STATE_LOGGED_OUT:
            await self.pause(record.tenant, record.id, "logged_out")
        self._wake.set()

    async def pause(self, tenant: str, instance_id: str, reason: str) -> InstanceRecord:
        await self._configure(tenant, instance_id)
        self.scheduler.pause(f"{tenant}/{instance_id}", reason)
        log.warning("sending paused on %s/%s: %s", tenant, instance_id, reason)
        self.on_pause(reason)
        record = await self._instances.update(
            tenant, instance_id, {"sending_paused_reason": reason}
        )
        if self._events is not None:
            await self._events.append(tenant, instance_id, event_pb2.SendingPaused(reason=reason))
        return record

    async def resume(self, tenant: str, instance_id: str) -> InstanceRecord:
        await self._configure(tenant, instance_id)
        self.scheduler.resume(f"{tenant}/{instance_id}")
        log.info("sending resumed on %s/%s", tenant, instance_id)
        self._wake.set()
        record = await self._instances.update(tenant, instance_id, {"sending_paused_reason": ""})
        if self._events is not None:
            await self._events.append(tenant, instance_id, event_pb2.SendingResumed())
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

    async def on_receipt(self, instance_key: str, message_ids: tuple[str, ...], kind: str) -> None:
        to_state, from_states = (
            (M.MESSAGE_STATE_DELIVERED, DELIVERED_FROM)
            if kind == "delivered"
            else (M.MESSAGE_STATE_READ, READ_FROM)
        )
        moved = await self._messages.advance_by_whatsapp_ids(message_ids, to_state, from_states)
        for message in moved:
            await self._message_event(dataclasses.replace(message, state=to_state))
            if message.state == M.MESSAGE_STATE_SENT:  # its first receipt: it arrived
                self.scheduler.on_receipt(message.instance_key, message.id)

    # ---- sending ------------------------------------------------------------------------

    async def _run(self) -> None:
        last_save = self._clock()
        while True:
            wake_at = self.scheduler.next_wakeup()
            delay = 1.0 if wake_at is None else max(0.0, wake_at - self._clock())
            sleep = min(delay, COUNTERS_SAVE_SECONDS)
            self._sleeping_until = self._clock() + sleep
            await self._wake.wait(sleep)
            self._sleeping_until = None
            for decision in self.scheduler.due():
                self._tasks.spawn(self._carry_out(decision))
            if self._clock() - last_save >= COUNTERS_SAVE_SECONDS:
                await self._save_counters()
                last_save = self._clock()

    async def _carry_out(self, decision: Release | Expiry | AutoPause) -> None:
        key = decision.instance if isinstance(decision, AutoPause) else decision.message.instance
        try:
            with about_instance_key(key):  # its log lines (and its tasks') name the instance
                await self._decide(decision)
        finally:
            self._wake.set()  # a finished send or failure may make the next message due

    async def _decide(self, decision: Release | Expiry | AutoPause) -> None:
        if isinstance(decision, AutoPause):
            tenant, _, instance_id = decision.instance.partition("/")
            await self.pause(tenant, instance_id, decision.reason)
        elif isinstance(decision, Expiry):
            await self._transition(
                decision.message.message_id,
                M.MESSAGE_STATE_EXPIRED,
                from_states=[M.MESSAGE_STATE_QUEUED],
            )
        else:
            await self._send(decision)

    async def _send(self, release: Release) -> None:
        self.on_release_lateness(self._clock() - release.scheduled_at)
        outgoing = release.message
        message = await self._messages.by_id(outgoing.message_id)
        handed = message is not None and await self._transition(
            outgoing.message_id, M.MESSAGE_STATE_SENDING, from_states=[M.MESSAGE_STATE_QUEUED]
        )
        if not handed or message is None:  # cancelled or gone in the meantime
            self.scheduler.on_not_sent(outgoing.instance, outgoing.message_id)
            return
        # Saved now, with the message in flight: a crash from here on counts it as sent, so
        # no cap can be exceeded after a restart.
        await self._save_counters({outgoing.instance})
        content = self._content(message)
        try:
            if release.typing_seconds > 0:
                await self._pool.set_typing(outgoing.instance, message.recipient_jid, True)
                await asyncio.sleep(release.typing_seconds)
            result = await self._pool.send(outgoing.instance, message.recipient_jid, content)
        except EngineCallFailed as error:
            await self._send_failed(message, error)
            return
        except WorkerUnavailable:
            # The worker died while the message was with it: it may have gone out.
            await self._transition(
                message.id,
                M.MESSAGE_STATE_DELIVERY_UNKNOWN,
                from_states=[M.MESSAGE_STATE_SENDING],
                failure_reason="the engine worker died while sending it",
            )
            await self._maybe_sent(message)
            return
        await self._transition(
            message.id,
            M.MESSAGE_STATE_SENT,
            from_states=[M.MESSAGE_STATE_SENDING],
            whatsapp_message_id=result.message_id,
            sent_time_us=int(result.timestamp * 1e6),
        )
        self.scheduler.on_sent(outgoing.instance, message.id)
        (await self._known_contacts(outgoing.instance)).add(message.recipient_jid)
        self._wake.set()  # the instance's next message may be due now
        # Counters are saved with every send, so caps hold across a crash too.
        await self._save_counters({outgoing.instance})

    async def _transition(
        self, message_id: str, to_state: int, *, from_states: list[int], **changes: Any
    ) -> bool:
        """Moves a message's state in the outbox and, if it moved, appends the event."""
        moved = await self._messages.transition(
            message_id, to_state, from_states=from_states, **changes
        )
        if moved is not None:
            await self._message_event(moved)
        return moved is not None

    async def _message_event(self, message: MessageRecord) -> None:
        self.on_message_state(message.state)
        if self._events is None:
            return
        await self._events.append(message.tenant, message.instance_id, state_event(message))

    async def _maybe_sent(self, message: MessageRecord) -> None:
        """A DELIVERY_UNKNOWN message may have gone out: count it as sent, so caps and the
        new-contact count stay on the safe side."""
        self.scheduler.on_sent(message.instance_key, message.id)
        (await self._known_contacts(message.instance_key)).add(message.recipient_jid)
        await self._save_counters({message.instance_key})

    async def _send_failed(self, message: MessageRecord, error: EngineCallFailed) -> None:
        if error.kind == "not_running":  # never reached the engine: safe to queue again
            await self._transition(
                message.id, M.MESSAGE_STATE_QUEUED, from_states=[M.MESSAGE_STATE_SENDING]
            )
            self.scheduler.on_not_sent(message.instance_key, message.id)
            await self._schedule(message)
            return
        code = (
            error.kind.removeprefix("refused:")
            if error.kind.startswith("refused:")
            else ("engine_error")
        )
        if code == "delivery_unknown":  # a timeout after the hand-off: it may have gone out
            await self._transition(
                message.id,
                M.MESSAGE_STATE_DELIVERY_UNKNOWN,
                from_states=[M.MESSAGE_STATE_SENDING],
                failure_reason=str(error)[:200],
            )
            await self._maybe_sent(message)
            return
        await self._transition(
            message.id,
            M.MESSAGE_STATE_FAILED,
            from_states=[M.MESSAGE_STATE_SENDING],
            failure_reason=f"{code}: {error}"[:200],
        )
        reason = self.scheduler.on_failed(message.instance_key, message.id, code)
        if reason:
            await self.pause(message.tenant, message.instance_id, reason)

    def _content(self, message: MessageRecord) -> OutgoingContent:
        """The stored message as the engine sends it; spins are picked now."""
        body = dict(message.content)
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
        if kind in ("image", "video", "audio", "document"):
            body[kind] = Media(message.media or b"", caption=caption, **media_fields)
        return OutgoingContent(**body)

    async def _save_counters(self, keys: set[str] | None = None) -> None:
        for key in self.scheduler.dirty() if keys is None else keys:
            tenant, _, instance_id = key.partition("/")
            state = self.scheduler.export_state(key)
            self.scheduler.mark_saved(key)
            try:
                await self._instances.update(tenant, instance_id, {"scheduler_state": state})
            except Exception:  # the instance was deleted meanwhile
                log.debug("counters of %s not saved", key, exc_info=True)


def _ignore(*_: object) -> None:
    """No metrics are wired."""
