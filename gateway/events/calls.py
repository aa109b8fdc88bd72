"""Incoming calls: each becomes a durable call_received event. An instance whose call
settings say so declines the call at once and answers the caller with a text, queued through
the central scheduler like any message (its send policy, caps and pauses apply)."""

from __future__ import annotations

import logging
from typing import Any

from zapgate.gateway.connections.engines import Engines
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.events.presence import call_to_proto
from zapgate.gateway.rpc.errors import FieldViolation
from zapgate.gateway.rpc.validation import check_text
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.templates import TemplateError, check
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.messages import MessageRecord
from zapgate.sessions.errors import EngineError
from zapgate.sessions.events import CallReceived
from zapgate.v1 import instance_pb2

log = logging.getLogger(__name__)
MAX_REPLY_CHARS = 4096


def check_call_settings(field: str, settings: instance_pb2.CallSettings) -> list[FieldViolation]:
    """A reply needs rejection (a caller whose call rang on gets no text), and is a template
    without variables (spin variants allowed)."""
    reply = settings.reply_text
    violations = check_text(f"{field}.reply_text", reply, MAX_REPLY_CHARS)
    if reply and not settings.reject_calls:
        violations.append(FieldViolation(f"{field}.reply_text", "only with reject_calls"))
    if reply and not violations:
        try:
            check(reply, {})
        except TemplateError as error:
            violations.append(FieldViolation(f"{field}.reply_text", str(error)))
    return violations


class CallDesk:
    def __init__(
        self,
        instances: InstanceRepository,
        engines: Engines,
        dispatcher: Dispatcher,
        events: EventLog,
    ) -> None:
        self._instances = instances
        self._engines = engines
        self._dispatcher = dispatcher
        self._events = events

    async def received(self, tenant: str, instance_id: str, call: CallReceived) -> None:
        record = await self._instances.get(tenant, instance_id)
        settings: dict[str, Any] = dict(record.call_settings or {}) if record else {}
        rejected, reply_id = False, ""
        if settings.get("reject_calls"):
            rejected = await self._reject(tenant, instance_id, call)
        if rejected and settings.get("reply_text"):
            reply = MessageRecord(
                tenant=tenant,
                instance_id=instance_id,
                recipient_jid=call.caller_jid,
                kind="text",
                content={"text": settings["reply_text"], "variables": {}},
                # A caller who calls twice is answered twice, but one call never twice.
                idempotency_key=f"call:{call.call_id}"[:200],
            )
            stored, _ = await self._dispatcher.accept(reply)
            reply_id = stored.id
        event = call_to_proto(call, rejected=rejected, reply_message_id=reply_id)
        await self._events.append(tenant, instance_id, event)

    async def _reject(self, tenant: str, instance_id: str, call: CallReceived) -> bool:
        try:
            await self._engines.reject_call(
                tenant, instance_id, call.from_jid or call.caller_jid, call.call_id
            )
        except EngineError as error:
            # The call rings on: say so in the event (rejected false), never fail the event.
            log.warning(
                "%s/%s: could not reject call %s: %s", tenant, instance_id, call.call_id, error
            )
            return False
        return True
