"""The durable outbox: messages, scoped by tenant and instance."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.group_commit import GroupCommit
from zapgate.gateway.store.outbox_writers import (
    INTEGRITY_ERRORS,
    Companions,
    insert_companions,
    outbox_writer,
)
from zapgate.gateway.store.schema import messages
from zapgate.v1 import message_pb2

M = message_pb2.MessageState


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
    failure_reason: str = ""
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
        """A copy with `changes`. dataclasses.replace would run __init__ over all 18 fields
        again (6 µs), and every accepted message takes two copies."""
        if not changes.keys() <= _FIELD_NAMES:
            raise TypeError(f"MessageRecord has no field {sorted(changes.keys() - _FIELD_NAMES)}")
        copy = object.__new__(MessageRecord)
        copy.__dict__.update(self.__dict__, **changes)
        return copy


_WITHOUT_MEDIA = [c for c in messages.c if c.name != "media"]


class Companion(Protocol):
    """Rows committed in the same transaction as new messages (their QUEUED events): one
    commit instead of two, and never a message without its event."""

    table: sa.Table

    def rows(self, created: list[MessageRecord]) -> list[dict[str, Any]]: ...

    def committed(self) -> None: ...


class MessageRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock
        self.companion: Companion | None = None
        self._writer = outbox_writer(engine)
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
            seqs: list[int | None] = list(await self._writer.write(rows, self._companions(batch)))
        except INTEGRITY_ERRORS:
            return await self._insert_one_by_one(batch)  # find the conflicting ones
        self._committed()
        return seqs

    async def _insert_one_by_one(self, batch: list[MessageRecord]) -> list[int | None]:
        """Seq of each inserted row; None where the idempotency key was already used."""
        seqs: list[int | None] = []
        for record in batch:
            try:
                async with self._engine.begin() as conn:
                    seqs.append(await _insert_one(conn, record))
                    await insert_companions(conn, self._companions([record]))
                self._committed()
            except IntegrityError:
                if record.idempotency_key is None:
                    raise
                seqs.append(None)
        return seqs

    def _companions(self, created: list[MessageRecord]) -> Companions:
        if self.companion is None:
            return []
        return [(self.companion.table, self.companion.rows(created))]

    def _committed(self) -> None:
        if self.companion is not None:
            self.companion.committed()

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

    async def by_id(self, message_id: str) -> MessageRecord | None:
        return await self._one(messages.c.id == message_id)

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
        self, message_id: str, to_state: int, *, from_states: Sequence[int], **changes: Any
    ) -> MessageRecord | None:
        """Moves a message to `to_state` only if it is in one of `from_states` (so a late
        receipt never moves READ back to DELIVERED, and a cancel never hits a sent one).
        Returns the moved message, or None."""
        values = {"state": to_state, "update_time_us": self._clock(), **changes}
        async with self._engine.begin() as conn:
            row = (
                (
                    await conn.execute(
                        sa.update(messages)
                        .where(messages.c.id == message_id, messages.c.state.in_(list(from_states)))
                        .values(**values)
                        .returning(*_WITHOUT_MEDIA)
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _record(row)

    async def advance_by_whatsapp_ids(
        self, whatsapp_ids: Sequence[str], to_state: int, from_states: Sequence[int]
    ) -> list[MessageRecord]:
        """Receipts: moves the named sent messages forward; returns the ones that moved."""
        condition = sa.and_(
            messages.c.whatsapp_message_id.in_(list(whatsapp_ids)),
            messages.c.state.in_(list(from_states)),
        )
        async with self._engine.begin() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(*[c for c in messages.c if c.name != "media"]).where(condition)
                    )
                )
                .mappings()
                .all()
            )
            await conn.execute(
                sa.update(messages)
                .where(condition)
                .values(state=to_state, update_time_us=self._clock())
            )
        return [_record(row) for row in rows]

    async def recover(self) -> list[MessageRecord]:
        """At start: a message that was SENDING when the process died may or may not have
        reached WhatsApp; it becomes DELIVERY_UNKNOWN and is never sent again. Returns the
        QUEUED ones, in enqueue order, for the scheduler."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(messages)
                .where(messages.c.state == M.MESSAGE_STATE_SENDING)
                .values(
                    state=M.MESSAGE_STATE_DELIVERY_UNKNOWN,
                    update_time_us=self._clock(),
                    failure_reason="the gateway stopped while handing it to WhatsApp",
                )
            )
            rows = (
                (
                    await conn.execute(
                        sa.select(*[c for c in messages.c if c.name != "media"])
                        .where(messages.c.state == M.MESSAGE_STATE_QUEUED)
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
