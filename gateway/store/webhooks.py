"""Persistence of webhooks and their delivery state, always scoped by tenant. Clients change
the configuration (create, update, delete); the webhook's delivery loop changes only the
delivery columns, and appends a status event in the same transaction as a status change.

In cluster mode the delivery loop's writes carry a `fence` (the webhook's lease: node and
epoch, gateway/cluster/webhook_leases.py): the same UPDATE also requires that lease to be
still held and unexpired, so a node that lost the webhook never moves its cursor. A single
node passes none: the statements are the same as without a cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.event_append import (
    append_events,
    last_issued_cursor,
    lock_event_order,
)
from zapgate.gateway.store.fencing import FenceToken, database_now_us
from zapgate.gateway.store.schema import events, webhooks
from zapgate.sessions.vault import SealedSession
from zapgate.v1 import event_pb2

ACTIVE = event_pb2.WEBHOOK_STATUS_ACTIVE
RETRYING = event_pb2.WEBHOOK_STATUS_RETRYING
FAILING = event_pb2.WEBHOOK_STATUS_FAILING
DISABLED = event_pb2.WEBHOOK_STATUS_DISABLED
RUNNING = (ACTIVE, RETRYING)
# Fields a client sets (UpdateWebhook's field mask names these, `enabled` aside).
CONFIG_FIELDS = ("url", "instance_ids", "types", "format", "description")


@dataclass(frozen=True)
class WebhookRecord:
    tenant: str
    id: str
    url: str
    secret: SealedSession
    instance_ids: Sequence[str] = ()
    types: Sequence[int] = ()
    format: int = 1
    description: str = ""
    create_time_us: int = 0
    update_time_us: int = 0
    status: int = ACTIVE
    disabled_reason: str = ""
    cursor: int = 0
    attempts: int = 0
    next_attempt_us: int = 0
    failing_since_us: int = 0
    last_error: str = ""
    last_error_us: int = 0
    last_success_us: int = 0
    lag_events: int = field(default=0, compare=False)  # counted on reads, not stored

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.id)

    @property
    def enabled(self) -> bool:
        return self.status in RUNNING


@dataclass(frozen=True)
class Failure:
    """A failed attempt: what went wrong and when to try again."""

    error: str
    attempts: int
    next_attempt_us: int
    failing_since_us: int


class WebhookRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock

    async def create(self, record: WebhookRecord) -> WebhookRecord:
        """Stores a new webhook; it starts after the newest event so far (after every cursor
        issued, so a log emptied by retention is no gap to it)."""
        now = self._clock()
        async with self._engine.begin() as conn:
            await lock_event_order(conn)  # every cursor issued so far is committed
            newest = await last_issued_cursor(conn)
            values = _row(record) | {
                "create_time_us": now,
                "update_time_us": now,
                "cursor": newest,
                "status": ACTIVE,
                "last_error": "",
                "last_error_us": 0,
                "last_success_us": 0,
                **_cleared_failure(),
            }
            await conn.execute(sa.insert(webhooks).values(**values))
        return _record(values)

    async def get(self, tenant: str, webhook_id: str, *, lag: bool = False) -> WebhookRecord | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(sa.select(webhooks).where(_key(tenant, webhook_id))))
                .mappings()
                .first()
            )
            if row is None:
                return None
            record = _record(row)
            return await _with_lag(conn, record) if lag else record

    async def list_page(self, tenant: str, after_id: str, limit: int) -> list[WebhookRecord]:
        query = (
            sa.select(webhooks)
            .where(webhooks.c.tenant == tenant, webhooks.c.id > after_id)
            .order_by(webhooks.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            return [await _with_lag(conn, _record(row)) for row in rows]

    async def all(self) -> list[WebhookRecord]:
        """Every webhook of every tenant (delivery loops start for the enabled ones)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(webhooks))).mappings().all()
            return [_record(row) for row in rows]

    async def all_with_lag(self) -> list[WebhookRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(webhooks))).mappings().all()
            return [await _with_lag(conn, _record(row)) for row in rows]

    async def update(
        self, tenant: str, webhook_id: str, changes: dict[str, Any], status_row: StatusRow = None
    ) -> WebhookRecord | None:
        """Sets configuration fields (and, with `status`, the status; enabling clears the
        failure state so deliveries resume from the cursor at once)."""
        values = dict(changes)
        for name in ("instance_ids", "types"):
            if name in values:
                values[name] = list(values[name])
        values["update_time_us"] = self._clock()
        if values.get("status") in RUNNING:
            values |= _cleared_failure()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(webhooks).where(_key(tenant, webhook_id)).values(**values)
            )
            if not result.rowcount:
                return None
            if status_row is not None:
                await append_events(conn, [status_row])
            row = (
                (await conn.execute(sa.select(webhooks).where(_key(tenant, webhook_id))))
                .mappings()
                .one()
            )
            return await _with_lag(conn, _record(row))

    async def delete(self, tenant: str, webhook_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(webhooks).where(_key(tenant, webhook_id)))
        return bool(result.rowcount)

    async def secret_keys(self) -> list[tuple[str, str, str]]:
        """(tenant, webhook id, master key id) of every sealed signing secret."""
        query = sa.select(webhooks.c.tenant, webhooks.c.id, webhooks.c.secret_key_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.tenant, row.id, row.secret_key_id) for row in rows]

    async def replace_secret_wrapping(
        self, tenant: str, webhook_id: str, sealed: SealedSession
    ) -> bool:
        """Stores a re-wrapped data key (master key rotation); the ciphertext is unchanged."""
        values = {"secret_key_id": sealed.key_id, "secret_wrapped_key": sealed.wrapped_key}
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(webhooks)
                .where(
                    _key(tenant, webhook_id),
                    webhooks.c.secret_ciphertext == bytes(sealed.ciphertext),
                )
                .values(**values)
            )
        return bool(result.rowcount)

    async def delivered(
        self, tenant: str, webhook_id: str, cursor: int, fence: FenceToken | None = None
    ) -> bool:
        """Commits the cursor after a success; clears a run of failures. False once the
        webhook is gone or stopped, or its lease is lost (its loop ends)."""
        values = {"cursor": cursor, "last_success_us": self._clock(), **_cleared_failure()}
        return await self._set_delivery(tenant, webhook_id, values, fence, status=ACTIVE)

    async def failed(
        self, tenant: str, webhook_id: str, failure: Failure, fence: FenceToken | None = None
    ) -> bool:
        values = {
            "attempts": failure.attempts,
            "next_attempt_us": failure.next_attempt_us,
            "failing_since_us": failure.failing_since_us,
            "last_error": failure.error[:500],
            "last_error_us": self._clock(),
        }
        return await self._set_delivery(tenant, webhook_id, values, fence, status=RETRYING)

    async def stop(
        self,
        tenant: str,
        webhook_id: str,
        status: int,
        reason: str,
        status_row: dict[str, Any],
        fence: FenceToken | None = None,
    ) -> bool:
        """FAILING or DISABLED by the delivery loop, with its event, in one transaction."""
        values = {"status": status, "disabled_reason": reason[:500], "next_attempt_us": 0}
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(webhooks).where(_delivering(tenant, webhook_id, fence)).values(**values)
            )
            if not result.rowcount:
                return False
            await append_events(conn, [status_row])
        return True

    async def skipped(
        self,
        tenant: str,
        webhook_id: str,
        cursor: int,
        gap_row: dict[str, Any],
        fence: FenceToken | None = None,
    ) -> bool:
        """Retention dropped events before delivery: the cursor moves past them and the event
        saying so is appended, in one transaction, fenced like every delivery write (a node
        that lost the webhook neither moves its cursor nor reports a gap). Failures and
        status stay as they are. False, and nothing written, once the webhook is gone or
        stopped, or its lease lost."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(webhooks)
                .where(_delivering(tenant, webhook_id, fence))
                .values(cursor=cursor)
            )
            if not result.rowcount:
                return False
            await append_events(conn, [gap_row])
        return True

    async def _set_delivery(
        self,
        tenant: str,
        webhook_id: str,
        values: dict[str, Any],
        fence: FenceToken | None,
        status: int,
    ) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(webhooks)
                .where(_delivering(tenant, webhook_id, fence))
                .values(**values, status=status)
            )
        return bool(result.rowcount)


StatusRow = dict[str, Any] | None


def _cleared_failure() -> dict[str, Any]:
    return {"attempts": 0, "next_attempt_us": 0, "failing_since_us": 0, "disabled_reason": ""}


def _key(tenant: str, webhook_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(webhooks.c.tenant == tenant, webhooks.c.id == webhook_id)


def _delivering(tenant: str, webhook_id: str, fence: FenceToken | None) -> sa.ColumnElement[bool]:
    """The webhook, while it runs (and, with a fence, while that lease holds it)."""
    condition = sa.and_(_key(tenant, webhook_id), webhooks.c.status.in_(RUNNING))
    if fence is None:
        return condition
    return sa.and_(
        condition,
        webhooks.c.owner_node == fence.node_id,
        webhooks.c.lease_epoch == fence.epoch,
        webhooks.c.lease_expire_us > database_now_us(),
    )


async def _with_lag(conn: AsyncConnection, record: WebhookRecord) -> WebhookRecord:
    """Counts the events after the cursor that the webhook's filter matches."""
    query = (
        sa.select(sa.func.count())
        .select_from(events)
        .where(events.c.tenant == record.tenant, events.c.cursor > record.cursor)
    )
    if record.instance_ids:
        query = query.where(events.c.instance_id.in_(list(record.instance_ids)))
    if record.types:
        query = query.where(events.c.type.in_(list(record.types)))
    return replace(record, lag_events=int(await conn.scalar(query) or 0))


def _row(record: WebhookRecord) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "id": record.id,
        "url": record.url,
        "instance_ids": list(record.instance_ids),
        "types": list(record.types),
        "format": record.format,
        "description": record.description,
        "secret_key_id": record.secret.key_id,
        "secret_wrapped_key": record.secret.wrapped_key,
        "secret_ciphertext": bytes(record.secret.ciphertext),
    }


def _record(row: Any) -> WebhookRecord:
    return WebhookRecord(
        tenant=row["tenant"],
        id=row["id"],
        url=row["url"],
        secret=SealedSession(
            0,
            row["secret_key_id"],
            bytes(row["secret_wrapped_key"]),
            bytes(row["secret_ciphertext"]),
        ),
        instance_ids=tuple(row["instance_ids"]),
        types=tuple(int(t) for t in row["types"]),
        format=int(row["format"]),
        description=row["description"],
        create_time_us=int(row["create_time_us"]),
        update_time_us=int(row["update_time_us"]),
        status=int(row["status"]),
        disabled_reason=row["disabled_reason"],
        cursor=int(row["cursor"]),
        attempts=int(row["attempts"]),
        next_attempt_us=int(row["next_attempt_us"]),
        failing_since_us=int(row["failing_since_us"]),
        last_error=row["last_error"],
        last_error_us=int(row["last_error_us"]),
        last_success_us=int(row["last_success_us"]),
    )
