"""EventService: replay the tenant's event log from a cursor, then stream it live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import CursorExpired, FieldViolation
from zapgate.gateway.rpc.tenancy import visible_instances
from zapgate.gateway.rpc.validation import check_instance_id, raise_if_any
from zapgate.v1 import event_pb2 as pb
from zapgate.v1 import event_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
READ_BATCH = 500
START_CURSOR_HEADER = "zapgate-start-cursor"


class EventService(event_pb2_grpc.EventServiceServicer):
    def __init__(self, log: EventLog) -> None:
        self._log = log

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        violations = [v for i in request.instance_ids for v in check_instance_id("instance_ids", i)]
        if request.from_cursor < 0:
            violations.append(FieldViolation("from_cursor", "must not be negative"))
        if any(t not in pb.EventType.values() or t == 0 for t in request.types):
            violations.append(FieldViolation("types", "unknown event type"))
        raise_if_any(violations)
        tenant = current_tenant()
        # A scoped key streams its own instances only; None: none of those asked for.
        instance_ids = visible_instances(request.instance_ids)
        cursor = await self._log.last_cursor() if request.only_new else request.from_cursor
        # Tells the client the stream is in place (it may act on that: see event.proto).
        await context.send_initial_metadata(((START_CURSOR_HEADER, str(cursor)),))
        while True:
            if cursor and cursor < self._log.oldest - 1:  # retention passed this cursor
                raise CursorExpired(cursor, self._log.oldest)
            new_appends = self._log.signal()  # taken before reading: no append slips by
            batch = (
                []
                if instance_ids is None
                else await self._log.read(tenant, cursor, instance_ids, request.types, READ_BATCH)
            )
            for event in batch:
                yield pb.SubscribeResponse(event=event)
                cursor = event.cursor
            if len(batch) < READ_BATCH:
                if self._log.closed:
                    return  # shutting down; the client resumes from its last cursor
                await new_appends.wait()
