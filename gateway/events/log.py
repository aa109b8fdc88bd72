"""The durable event log. Events are committed to the state store first; subscribers then
read the log from their own cursor, at their own pace, and wait on a broadcast signal for
new appends. So a slow subscriber never slows the others and never loses an event: it only
falls behind in the log (until retention passes it; then its stream ends OUT_OF_RANGE and it
resumes just before the oldest retained cursor). Cursors are never issued twice, and become
visible in cursor order (store/event_append.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.conflicts import retry_conflicts
from zapgate.gateway.store.event_append import (
    append_events,
    last_issued_cursor,
    lock_event_order,
)
from zapgate.gateway.store.schema import events
from zapgate.sessions.group_commit import GroupCommit
from zapgate.v1 import event_pb2 as pb

log = logging.getLogger(__name__)

# Event payload message -> (Event oneof field, EventType)
PAYLOADS: dict[type[Message], tuple[str, int]] = {
    pb.StateChanged: ("state_changed", pb.EVENT_TYPE_STATE_CHANGED),
    pb.QrUpdated: ("qr_updated", pb.EVENT_TYPE_QR_UPDATED),
    pb.MessageStateChanged: ("message_state_changed", pb.EVENT_TYPE_MESSAGE_STATE_CHANGED),
    pb.SendingPaused: ("sending_paused", pb.EVENT_TYPE_SENDING_PAUSED),
    pb.SendingResumed: ("sending_resumed", pb.EVENT_TYPE_SENDING_RESUMED),
    pb.MessageReceived: ("message_received", pb.EVENT_TYPE_MESSAGE_RECEIVED),
    pb.ContactsSynced: ("contacts_synced", pb.EVENT_TYPE_CONTACTS_SYNCED),
    pb.WebhookStatusChanged: ("webhook_status_changed", pb.EVENT_TYPE_WEBHOOK_STATUS_CHANGED),
    pb.GroupChanged: ("group_changed", pb.EVENT_TYPE_GROUP_CHANGED),
    pb.PresenceChanged: ("presence_changed", pb.EVENT_TYPE_PRESENCE_CHANGED),
    pb.ChatPresenceChanged: ("chat_presence_changed", pb.EVENT_TYPE_CHAT_PRESENCE_CHANGED),
    pb.CallReceived: ("call_received", pb.EVENT_TYPE_CALL_RECEIVED),
    pb.HistorySyncProgress: ("history_sync_progress", pb.EVENT_TYPE_HISTORY_SYNC_PROGRESS),
    pb.HistorySyncCompleted: ("history_sync_completed", pb.EVENT_TYPE_HISTORY_SYNC_COMPLETED),
    pb.ReadElsewhere: ("read_elsewhere", pb.EVENT_TYPE_READ_ELSEWHERE),
}


@dataclass(frozen=True)
class Retention:
    max_age_seconds: float = 7 * 24 * 3600.0
    max_events: int = 1_000_000
    check_seconds: float = 60.0


class EventLog:
    def __init__(
        self,
        engine: AsyncEngine,
        retention: Retention | None = None,
        clock: MicrosClock = system_micros,
    ) -> None:
        self._engine = engine
        self.retention = retention or Retention()
        self._clock = clock
        self._appended = asyncio.Event()
        # The oldest retained cursor, or the next one if none is left (0: not trimmed yet).
        self.oldest = 0
        self._appends = GroupCommit(self._insert)
        self.closed = False

    async def append(self, tenant: str, instance_id: str, payload: Message) -> None:
        """Commits one event. Concurrent appends share a transaction (group commit); cursors
        follow the order of the calls."""
        await self._appends.submit(self.row(tenant, instance_id, payload))

    def row(self, tenant: str, instance_id: str, payload: Message) -> dict[str, object]:
        """The `events` row of a payload, for `append` or for another transaction."""
        field, event_type = PAYLOADS[type(payload)]
        now = self._clock()
        event = pb.Event(instance_id=instance_id)
        getattr(event, field).CopyFrom(payload)
        event.time.FromMicroseconds(now)
        return {
            "tenant": tenant,
            "instance_id": instance_id,
            "type": event_type,
            "payload": event.SerializeToString(),
            "time_us": now,
        }

    def committed(self) -> None:
        """Rows from `row` were committed in another transaction (or by another node, in
        cluster mode: events/wakeups.py): subscribers see them."""
        self._wake_subscribers()

    async def _insert(self, rows: list[dict[str, object]]) -> list[None]:
        async def transaction() -> None:
            async with self._engine.begin() as conn:
                await append_events(conn, rows)

        await retry_conflicts(transaction)
        self._wake_subscribers()
        return [None] * len(rows)

    def _wake_subscribers(self) -> None:
        self._appended.set()
        self._appended = asyncio.Event()

    def close(self) -> None:
        """The gateway is stopping: subscribers end their streams (and resume elsewhere)."""
        self.closed = True
        self._wake_subscribers()

    def signal(self) -> asyncio.Event:
        """Set on the next append. Take it before reading, so no append is missed."""
        return self._appended

    async def read(
        self, tenant: str, after: int, instance_ids: Sequence[str], types: Sequence[int], limit: int
    ) -> list[pb.Event]:
        query = sa.select(events.c.cursor, events.c.payload).where(
            events.c.tenant == tenant, events.c.cursor > after
        )
        if instance_ids:
            query = query.where(events.c.instance_id.in_(list(instance_ids)))
        if types:
            query = query.where(events.c.type.in_(list(types)))
        query = query.order_by(events.c.cursor).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        found = []
        for cursor, payload in rows:
            event = pb.Event.FromString(bytes(payload))
            event.cursor = cursor
            found.append(event)
        return found

    async def last_cursor(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.max(events.c.cursor))) or 0)

    async def trim(self) -> int:
        """Drops events past the retention (age, then count); returns how many."""
        cutoff = self._clock() - int(self.retention.max_age_seconds * 1e6)
        async with self._engine.begin() as conn:
            dropped = (
                await conn.execute(sa.delete(events).where(events.c.time_us < cutoff))
            ).rowcount or 0
            newest = int(await conn.scalar(sa.select(sa.func.max(events.c.cursor))) or 0)
            keep_from = newest - self.retention.max_events + 1
            if keep_from > 1:
                dropped += (
                    await conn.execute(sa.delete(events).where(events.c.cursor < keep_from))
                ).rowcount or 0
            # No append in flight while the oldest is read: a cursor drawn but not committed
            # would be neither in the table nor above the sequence's value.
            await lock_event_order(conn)
            oldest = await conn.scalar(sa.select(sa.func.min(events.c.cursor)))
            if oldest is None:  # all gone: older cursors are out of range, the next is not
                oldest = await _next_cursor(conn)
        self.oldest = int(oldest)
        return int(dropped)

    async def run_retention(self) -> None:
        while True:
            try:
                dropped = await self.trim()
                if dropped:
                    log.info("event retention dropped %d events", dropped)
            except Exception:
                log.exception("event retention failed")
            await asyncio.sleep(self.retention.check_seconds)


async def _next_cursor(conn: AsyncConnection) -> int:
    """The cursor the next append gets: one above every cursor ever issued, rows left or not."""
    return await last_issued_cursor(conn) + 1
