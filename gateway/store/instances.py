"""Persistence of instances, always scoped by tenant."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.rpc.errors import InstanceAlreadyExists, InstanceNotFound
from zapgate.gateway.store.conflicts import retry_conflicts
from zapgate.gateway.store.event_append import append_events
from zapgate.gateway.store.fencing import FenceToken, hold_fence
from zapgate.gateway.store.instance_writers import (
    InstanceUpdate,
    instance_writer,
    select_by_keys,
)
from zapgate.gateway.store.schema import (
    chat_messages,
    chat_settings,
    chats,
    contacts,
    correspondents,
    group_actions,
    instances,
    number_checks,
    received_media,
    received_messages,
)
from zapgate.sessions.group_commit import GroupCommit
from zapgate.v1 import instance_pb2

BANNED = instance_pb2.INSTANCE_STATE_BANNED
# The event-log row of a record's new state.
EventOf = Callable[["InstanceRecord"], dict[str, Any]]

# Fields a client may set, on create and through UpdateInstance's field mask.
MUTABLE_FIELDS = ("display_name", "phone", "labels", "proxy_url", "send_policy", "call_settings")
# Fields the supervisor sets as the connection changes.
CONNECTION_FIELDS = (
    "state",
    "state_reason",
    "state_detail",
    "state_change_time_us",
    "jid",
    "ban_code",
    "ban_expire_us",
    "keepalive_failing",
    "want_connected",
    "sending_paused_reason",
    "scheduler_state",
)


@dataclass(frozen=True)
class InstanceRecord:
    tenant: str
    id: str
    display_name: str
    phone: str
    state: int
    labels: Mapping[str, str] = field(default_factory=dict)
    create_time_us: int = 0
    update_time_us: int = 0
    proxy_url: str = ""
    state_reason: int = 1
    state_detail: str = ""
    state_change_time_us: int = 0
    jid: str = ""
    ban_code: int = 0
    ban_expire_us: int = 0
    keepalive_failing: bool = False
    want_connected: bool = False
    session_generation: int = 0
    send_policy: Mapping[str, Any] | None = None
    sending_paused_reason: str = ""
    scheduler_state: Mapping[str, Any] | None = None
    # What happens to incoming calls ({"reject_calls": bool, "reply_text": str}; NULL: ring).
    call_settings: Mapping[str, Any] | None = None

    @property
    def key(self) -> str:
        """Unique across tenants; names the instance to the engines."""
        return f"{self.tenant}/{self.id}"

    def same_client_fields(self, other: InstanceRecord) -> bool:
        return all(getattr(self, name) == getattr(other, name) for name in MUTABLE_FIELDS)


class InstanceRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock
        self._reads = GroupCommit(self._read_many)
        self._updates = GroupCommit(self._write_updates)
        self._writer = instance_writer(engine)

    async def create(self, record: InstanceRecord) -> tuple[InstanceRecord, bool]:
        """Inserts `record`; returns (stored record, created). An existing instance with the
        same client fields is returned as is; with different fields it is a conflict."""
        now = self._clock()
        record = replace(record, create_time_us=now, update_time_us=now, state_change_time_us=now)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(instances).values(**_row(record)))
        except IntegrityError:
            existing = await self.get(record.tenant, record.id)
            if existing is not None and existing.same_client_fields(record):
                return existing, False
            raise InstanceAlreadyExists(record.id) from None
        return record, True

    async def get(self, tenant: str, instance_id: str) -> InstanceRecord | None:
        """Concurrent reads share one query (a restart reads every instance at once)."""
        return await self._reads.submit((tenant, instance_id))

    async def _read_many(self, keys: list[tuple[str, str]]) -> list[InstanceRecord | None]:
        async with self._engine.connect() as conn:
            result = await conn.execute(select_by_keys(), {"keys": list(dict.fromkeys(keys))})
            found = {(row["tenant"], row["id"]): _record(row) for row in result.mappings()}
        return [found.get(key) for key in keys]

    async def require(self, tenant: str, instance_id: str) -> InstanceRecord:
        record = await self.get(tenant, instance_id)
        if record is None:
            raise InstanceNotFound(instance_id)
        return record

    async def list_page(
        self,
        tenant: str,
        *,
        state: int | None,
        after_id: str,
        limit: int,
        only: Sequence[str] = (),
    ) -> list[InstanceRecord]:
        """Instances ordered by id, strictly after `after_id` (keyset paging); only those
        with an id in `only`, when given."""
        query = sa.select(instances).where(instances.c.tenant == tenant)
        if only:
            query = query.where(instances.c.id.in_(list(only)))
        if state is not None:
            query = query.where(instances.c.state == state)
        if after_id:
            query = query.where(instances.c.id > after_id)
        query = query.order_by(instances.c.id).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def list_wanting_connection(self) -> list[InstanceRecord]:
        """Every tenant's instances that should be connected (for recovery after a start)."""
        query = sa.select(instances).where(instances.c.want_connected.is_(True))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def mark_reconnecting(
        self,
        state: int,
        reason: int,
        *,
        unpaired_state: int,
        unpaired_reason: int,
        event_of: EventOf,
    ) -> None:
        """At start, for every instance that should be connected: paired ones are about to
        reconnect (`state`, `reason`); unpaired ones were pairing with nobody left to watch,
        so they stop wanting a connection. Banned ones keep their ban. Each change commits
        with its event (`event_of` the changed record)."""
        now = self._clock()
        wanted = sa.and_(instances.c.want_connected.is_(True), instances.c.state != BANNED)
        changed: list[InstanceRecord] = []
        async with self._engine.begin() as conn:
            for paired, values in (
                (instances.c.jid != "", {"state": state, "state_reason": reason}),
                (
                    instances.c.jid == "",
                    {
                        "state": unpaired_state,
                        "state_reason": unpaired_reason,
                        "want_connected": False,
                    },
                ),
            ):
                result = await conn.execute(
                    sa.update(instances)
                    .where(wanted, paired)
                    .values(**values, state_detail="", state_change_time_us=now, update_time_us=now)
                    .returning(*instances.c)
                )
                changed += [_record(row) for row in result.mappings()]
            await append_events(conn, [event_of(record) for record in changed])

    async def update(
        self,
        tenant: str,
        instance_id: str,
        changes: Mapping[str, Any],
        *,
        events: Sequence[dict[str, Any]] = (),
        fence: FenceToken | None = None,
    ) -> InstanceRecord:
        """Changes the named fields; `events` (rows of the event log) commit with them.
        Concurrent updates (of any instances) share one transaction: see `_write_updates`.
        With a `fence` (cluster mode), alone and only under that lease (raises Fenced)."""
        unknown = set(changes) - {*MUTABLE_FIELDS, *CONNECTION_FIELDS}
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        now = self._clock()
        values = {**changes, "update_time_us": now}
        if "state" in changes:
            values.setdefault("state_change_time_us", now)
        if fence is not None:
            return await self._update_fenced(tenant, instance_id, values, events, fence)
        result = await self._updates.submit(
            InstanceUpdate(tenant, instance_id, values, list(events))
        )
        if isinstance(result, Exception):
            raise result
        return result

    async def _update_fenced(
        self,
        tenant: str,
        instance_id: str,
        values: dict[str, Any],
        events: Sequence[dict[str, Any]],
        fence: FenceToken,
    ) -> InstanceRecord:
        """One update in a transaction that first holds the lease (cluster mode): not
        batched, as each instance's fence is checked in its own transaction."""

        async def transaction() -> InstanceRecord:
            async with self._engine.begin() as conn:
                await hold_fence(conn, tenant, instance_id, fence)
                result = await conn.execute(
                    sa.update(instances)
                    .where(_key(tenant, instance_id))
                    .values(**values)
                    .returning(*instances.c)
                )
                row = result.mappings().first()
                if row is None:
                    raise InstanceNotFound(instance_id)
                await append_events(conn, list(events))
            return _record(row)

        return await retry_conflicts(transaction)

    async def _write_updates(self, batch: list[InstanceUpdate]) -> list[InstanceRecord | Exception]:
        """Group commit of instance updates (sessions/group_commit.py): every change of
        the batch and every event row of the batch in ONE transaction, so each instance's new
        state and its event commit (or roll back, as after a crash) together. A batch that
        fails (a constraint, say) is written again one update at a time, so the error
        reaches only the caller whose update caused it."""
        try:
            return await self._write_updates_together(batch)
        except Exception as error:
            if len(batch) == 1:
                return [error]
        results: list[InstanceRecord | Exception] = []
        for update in batch:
            results += await self._write_updates([update])
        return results

    async def _write_updates_together(
        self, batch: list[InstanceUpdate]
    ) -> list[InstanceRecord | Exception]:
        rows = await retry_conflicts(lambda: self._writer.write(batch))  # one transaction
        return [
            InstanceNotFound(update.instance_id) if row is None else _record(row)
            for update, row in zip(batch, rows, strict=True)
        ]

    def close(self) -> None:
        self._writer.close()

    async def delete(self, tenant: str, instance_id: str) -> bool:
        """Deletes the instance with what belongs to it (its events stay until retention:
        they are the log subscribers resume from)."""
        async with self._engine.begin() as conn:
            tables = (
                received_media,
                received_messages,
                correspondents,
                contacts,
                number_checks,
                group_actions,
                chat_messages,
                chats,
                chat_settings,
            )
            for table in tables:
                await conn.execute(
                    sa.delete(table).where(
                        table.c.tenant == tenant, table.c.instance_id == instance_id
                    )
                )
            result = await conn.execute(sa.delete(instances).where(_key(tenant, instance_id)))
        return bool(result.rowcount)


def _key(tenant: str, instance_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(instances.c.tenant == tenant, instances.c.id == instance_id)


def _row(record: InstanceRecord) -> dict[str, Any]:
    row = {f.name: getattr(record, f.name) for f in fields(InstanceRecord)}
    row["labels"] = dict(record.labels)
    return row


def _record(row: Mapping[str, Any] | sa.RowMapping) -> InstanceRecord:
    values = {f.name: row[f.name] for f in fields(InstanceRecord)}
    values["labels"] = dict(values["labels"])
    values["keepalive_failing"] = bool(values["keepalive_failing"])
    values["want_connected"] = bool(values["want_connected"])
    return InstanceRecord(**values)
