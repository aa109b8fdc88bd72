"""The durable outbox: messages, scoped by tenant and instance. Every change of a message's
state commits in the same transaction as its event (the journal builds the event rows), so
no crash can leave a state without its event, or an event without its state."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.chat_outbound import mirror_in
from zapgate.gateway.store.conflicts import retry_conflicts
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.fencing import FenceToken, hold_fence
from zapgate.gateway.store.outbox_writers import (
    INTEGRITY_ERRORS,
    Companions,
    OutboxWriter,
    outbox_writer,
)
from zapgate.gateway.store.schema import events, messages
from zapgate.sessions.group_commit import GroupCommit
from zapgate.v1 import message_pb2

M = message_pb2.MessageState
# The failure_reason of a message found SENDING at a start (docs/messages.md lists them all).
GATEWAY_STOPPED = "gateway_stopped"


@dataclass(frozen=True)
class MessageRecord:
    tenant: str
    instance_id: str
    recipient_jid: str
    kind: str
    content: Mapping[str, Any]  # template body, variables and metadata (no media bytes)
    state: int = M.MESSAGE_STATE_QUEUED
    id: str = field(default_factory=lambda: f"msg-{secrets.token_hex(10)}")
    media: bytes | None = None
    failure_reason: str = ""  # a stable code (docs/messages.md)
    failure_detail: str = ""  # the words for a person
    priority: int = 0
    idempotency_key: str | None = None
    whatsapp_message_id: str = ""
    send_at_us: int = 0
    expire_us: int | None = None
    create_time_us: int = 0
    update_time_us: int = 0
    sent_time_us: int | None = None
    seq: int = 0

    @property
    def instance_key(self) -> str:
        return f"{self.tenant}/{self.instance_id}"

    def but(self, **changes: Any) -> MessageRecord:
        """A copy with `changes`. dataclasses.replace would run __init__ over all 19 fields
        again (6 µs), and every accepted message takes two copies."""
        if not changes.keys() <= _FIELD_NAMES:
            raise TypeError(f"MessageRecord has no field {sorted(changes.keys() - _FIELD_NAMES)}")
        copy = object.__new__(MessageRecord)
        copy.__dict__.update(self.__dict__, **changes)
        return copy


_WITHOUT_MEDIA = [c for c in messages.c if c.name != "media"]


class Journal(Protocol):
    """The event of a message's state, as an `events` row for the same transaction."""

    def row(
        self, message: MessageRecord, receipt_from: tuple[str, str] = ("", "")
    ) -> dict[str, Any]:
        """`receipt_from`: who acknowledged it (phone JID, LID), for a receipt's move."""

    def committed(self) -> None:
        """Rows from `row` were committed: subscribers may read them."""


class MessageRepository:
    def __init__(
        self,
        engine: AsyncEngine,
        journal: Journal,
        clock: MicrosClock = system_micros,
        writer: OutboxWriter | None = None,  # default: the one made for the database
    ) -> None:
        self._engine = engine
        self._journal = journal
        self._clock = clock
        self._writer = writer if writer is not None else outbox_writer(engine)
        self._inserts = GroupCommit(self._insert_batch)

    def close(self) -> None:
        self._writer.close()

    async def create(self, record: MessageRecord) -> tuple[MessageRecord, bool]:
        """Commits a new message; with an idempotency key already used on this instance,
        returns the first message instead (created False). Concurrent calls share one
        transaction (group commit)."""
        now = self._clock()
        record = record.but(
            create_time_us=now, update_time_us=now, send_at_us=record.send_at_us or now
        )
        seq = await self._inserts.submit(record)
        if seq is None:  # the idempotency key was taken
            existing = await self._by_idempotency_key(record)
            if existing is None:
                raise RuntimeError(f"message {record.id} conflicts with nothing it can find")
            return existing, False
        return record.but(seq=seq), True

    async def _insert_batch(self, batch: list[MessageRecord]) -> list[int | None]:
        try:
            rows = [_row(record) for record in batch]
            companions = self._companions(batch)
            # One transaction (or one statement): nothing committed when it conflicted.
            written = await retry_conflicts(lambda: self._writer.write(rows, companions))
            seqs: list[int | None] = list(written)
        except INTEGRITY_ERRORS:
            return await self._insert_one_by_one(batch)  # find the conflicting ones
        self._journal.committed()
        return seqs

    async def _insert_one_by_one(self, batch: list[MessageRecord]) -> list[int | None]:
        """Seq of each inserted row; None where the idempotency key was already used."""
        seqs: list[int | None] = []
        for record in batch:
            try:
                seqs.append(await retry_conflicts(partial(self._insert_alone, record)))
                self._journal.committed()
            except IntegrityError:
                if record.idempotency_key is None:
                    raise
                seqs.append(None)
        return seqs

    async def _insert_alone(self, record: MessageRecord) -> int:
        async with self._engine.begin() as conn:
            seq = await _insert_one(conn, record)
            await append_events(conn, [self._journal.row(record)])
        return seq

    def _companions(self, created: list[MessageRecord]) -> Companions:
        """Each new message's QUEUED event, committed with it (the writer appends them
        last, in the same transaction)."""
        return [(events, [self._journal.row(record) for record in created])]

    async def _by_idempotency_key(self, record: MessageRecord) -> MessageRecord | None:
        return await self._one(
            messages.c.tenant == record.tenant,
            messages.c.instance_id == record.instance_id,
            messages.c.idempotency_key == record.idempotency_key,
        )

    async def get(self, tenant: str, instance_id: str, message_id: str) -> MessageRecord | None:
        return await self._one(
            messages.c.tenant == tenant,
            messages.c.instance_id == instance_id,
            messages.c.id == message_id,
        )

    async def by_whatsapp_id(
        self, tenant: str, instance_id: str, whatsapp_id: str
    ) -> MessageRecord | None:
        """The instance's sent message with this WhatsApp id (unique only within its
        account: scoped to the instance)."""
        return await self._one(
            messages.c.tenant == tenant,
            messages.c.instance_id == instance_id,
            messages.c.whatsapp_message_id == whatsapp_id,
        )

    async def _one(self, *conditions: sa.ColumnElement[bool]) -> MessageRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(messages).where(*conditions))).mappings().first()
        return None if row is None else _record(row)

    async def list_page(
        self, tenant: str, instance_id: str, *, state: int | None, before_seq: int, limit: int
    ) -> list[MessageRecord]:
        """Newest first (by enqueue order), strictly before `before_seq` (0: from the top)."""
        query = sa.select(*[c for c in messages.c if c.name != "media"]).where(
            messages.c.tenant == tenant, messages.c.instance_id == instance_id
        )
        if state is not None:
            query = query.where(messages.c.state == state)
        if before_seq:
            query = query.where(messages.c.seq < before_seq)
        query = query.order_by(messages.c.seq.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def transition(
        self,
        tenant: str,
        instance_id: str,
        message_id: str,
        to_state: int,
        *,
        from_states: Sequence[int],
        fence: FenceToken | None = None,
        **changes: Any,
    ) -> MessageRecord | None:
        """Moves a message to `to_state` only if it is in one of `from_states` (so a late
        receipt never moves READ back to DELIVERED, and a cancel never hits a sent one), with
        its event. Returns the moved message, or None. With a `fence` (cluster mode: the
        hand-off to the engine), only under that lease (raises Fenced)."""
        values = {"state": to_state, "update_time_us": self._clock(), **changes}
        condition = sa.and_(
            messages.c.tenant == tenant,
            messages.c.instance_id == instance_id,
            messages.c.id == message_id,
            messages.c.state.in_(list(from_states)),
        )
        moved = await self._move(condition, values, (tenant, instance_id, fence))
        return moved[0] if moved else None

    async def advance_by_whatsapp_ids(
        self,
        tenant: str,
        instance_id: str,
        whatsapp_ids: Sequence[str],
        to_state: int,
        from_states: Sequence[int],
        receipt_from: tuple[str, str] = ("", ""),
    ) -> list[tuple[int, MessageRecord]]:
        """Receipts: moves the instance's named sent messages forward, each with its event.
        Returns (the state it left, the moved message) of each one that moved."""
        condition = sa.and_(
            messages.c.tenant == tenant,
            messages.c.instance_id == instance_id,
            messages.c.whatsapp_message_id.in_(list(whatsapp_ids)),
            messages.c.state.in_(list(from_states)),
        )
        async with self._engine.begin() as conn:
            before = await conn.execute(sa.select(messages.c.id, messages.c.state).where(condition))
            left = {row.id: int(row.state) for row in before}
            if not left:
                return []
            values = {"state": to_state, "update_time_us": self._clock()}
            moved = await self._move_in(
                conn, condition & messages.c.id.in_(list(left)), values, receipt_from
            )
        self._journal.committed()
        return [(left[message.id], message) for message in moved]

    async def _move(
        self,
        condition: sa.ColumnElement[bool],
        values: dict[str, Any],
        fenced_by: tuple[str, str, FenceToken | None] | None = None,
    ) -> list[MessageRecord]:
        async def transaction() -> list[MessageRecord]:
            async with self._engine.begin() as conn:
                if fenced_by is not None:
                    await hold_fence(conn, *fenced_by)
                return await self._move_in(conn, condition, values)

        moved = await retry_conflicts(transaction)
        if moved:
            self._journal.committed()
        return moved

    async def _move_in(
        self,
        conn: AsyncConnection,
        condition: sa.ColumnElement[bool],
        values: dict[str, Any],
        receipt_from: tuple[str, str] = ("", ""),
    ) -> list[MessageRecord]:
        """Updates the matching messages and appends each one's event, in `conn`'s
        transaction."""
        result = await conn.execute(
            sa.update(messages).where(condition).values(**values).returning(*_WITHOUT_MEDIA)
        )
        moved = [_record(row) for row in result.mappings()]
        await mirror_in(conn, moved, values["update_time_us"])  # the chats show it too
        await append_events(conn, [self._journal.row(m, receipt_from) for m in moved])
        return moved

    async def recover(
        self, instance: tuple[str, str] | None = None, fence: FenceToken | None = None
    ) -> list[MessageRecord]:
        """At start: a message that was SENDING when the process died had been handed to the
        engine (it stays QUEUED until then), so it may or may not have reached WhatsApp: it
        becomes DELIVERY_UNKNOWN, with its event, and is never sent again. Returns the QUEUED
        ones, in enqueue order, for the scheduler. In cluster mode a node does this for one
        `instance` (tenant, id) as it takes it over, under its `fence`."""
        scope: sa.ColumnElement[bool] = sa.true()
        if instance is not None:
            scope = sa.and_(messages.c.tenant == instance[0], messages.c.instance_id == instance[1])
        await self._move(
            scope & (messages.c.state == M.MESSAGE_STATE_SENDING),
            {
                "state": M.MESSAGE_STATE_DELIVERY_UNKNOWN,
                "update_time_us": self._clock(),
                "failure_reason": GATEWAY_STOPPED,
                "failure_detail": "the gateway stopped while handing it to WhatsApp",
            },
            None if instance is None else (*instance, fence),
        )
        return await self.queued(instance)

    async def queued(self, instance: tuple[str, str] | None = None) -> list[MessageRecord]:
        """The QUEUED messages (of every instance, or of `instance` (tenant, id)), in
        enqueue order."""
        scope: sa.ColumnElement[bool] = sa.true()
        if instance is not None:
            scope = sa.and_(messages.c.tenant == instance[0], messages.c.instance_id == instance[1])
        async with self._engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(*[c for c in messages.c if c.name != "media"])
                        .where(scope, messages.c.state == M.MESSAGE_STATE_QUEUED)
                        .order_by(messages.c.seq)
                    )
                )
                .mappings()
                .all()
            )
        return [_record(row) for row in rows]

    async def receipt_rates(
        self, tenant: str, instance_id: str, last: int = 100
    ) -> tuple[float, float]:
        """Of the instance's last `last` sent messages: the share delivered, the share read."""
        sent = (M.MESSAGE_STATE_SENT, M.MESSAGE_STATE_DELIVERED, M.MESSAGE_STATE_READ)
        query = (
            sa.select(messages.c.state)
            .where(
                messages.c.tenant == tenant,
                messages.c.instance_id == instance_id,
                messages.c.state.in_(sent),
            )
            .order_by(messages.c.seq.desc())
            .limit(last)
        )
        async with self._engine.connect() as conn:
            states = [row[0] for row in await conn.execute(query)]
        if not states:
            return 0.0, 0.0
        read = states.count(M.MESSAGE_STATE_READ)
        delivered = read + states.count(M.MESSAGE_STATE_DELIVERED)
        return delivered / len(states), read / len(states)

    async def sent_recipients(self, tenant: str, instance_id: str) -> set[str]:
        """Everyone this instance ever sent to, or may have (so they are not new contacts)."""
        sent = (
            M.MESSAGE_STATE_SENT,
            M.MESSAGE_STATE_DELIVERED,
            M.MESSAGE_STATE_READ,
            M.MESSAGE_STATE_DELIVERY_UNKNOWN,
        )
        query = (
            sa.select(messages.c.recipient_jid)
            .distinct()
            .where(
                messages.c.tenant == tenant,
                messages.c.instance_id == instance_id,
                messages.c.state.in_(sent),
            )
        )
        async with self._engine.connect() as conn:
            return {row[0] for row in await conn.execute(query)}

    async def delete_instance(self, tenant: str, instance_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(messages).where(
                    messages.c.tenant == tenant, messages.c.instance_id == instance_id
                )
            )


_FIELD_NAMES = frozenset(f.name for f in fields(MessageRecord))
_ROW_FIELDS = [f.name for f in fields(MessageRecord) if f.name != "seq"]


def _row(record: MessageRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _ROW_FIELDS}
    row["content"] = dict(record.content)
    return row


async def _insert_one(conn: AsyncConnection, record: MessageRecord) -> int:
    result = await conn.execute(sa.insert(messages).values(**_row(record)))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def _record(row: sa.RowMapping) -> MessageRecord:
    values = {f.name: row[f.name] for f in fields(MessageRecord) if f.name in row}
    values["content"] = dict(values["content"])
    if values.get("media") is not None:
        values["media"] = bytes(values["media"])
    return MessageRecord(**values)
