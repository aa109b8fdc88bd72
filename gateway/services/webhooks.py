"""WebhookService: create, read, list, update, delete and test the caller's webhooks."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import FieldViolation, WebhookNotFound
from zapgate.gateway.rpc.paging import (
    WEBHOOK_ID,
    decode_page_token,
    encode_page_token,
    page_size,
)
from zapgate.gateway.rpc.validation import (
    check_instance_id,
    check_text,
    check_webhook_url,
    raise_if_any,
)
from zapgate.gateway.store.webhooks import (
    ACTIVE,
    CONFIG_FIELDS,
    DISABLED,
    WebhookRecord,
    WebhookRepository,
)
from zapgate.gateway.webhooks.deliveries import WebhookDeliveries
from zapgate.gateway.webhooks.signing_secret import generate_secret, seal_secret, secret_key
from zapgate.sessions.vault import Keyring
from zapgate.v1 import event_pb2, webhook_pb2, webhook_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
UPDATABLE = (*CONFIG_FIELDS, "enabled")
MAX_INSTANCE_IDS = 100
MAX_DESCRIPTION = 200
WEBHOOK_ID_CHARS = 40


class WebhookService(webhook_pb2_grpc.WebhookServiceServicer):
    def __init__(
        self,
        webhooks: WebhookRepository,
        deliveries: WebhookDeliveries,
        keyring: Keyring,
        events: EventLog,
    ) -> None:
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._keyring = keyring
        self._events = events

    async def CreateWebhook(
        self, request: webhook_pb2.CreateWebhookRequest, context: Context
    ) -> webhook_pb2.CreateWebhookResponse:
        new = request.webhook
        violations = _check_config(new, CONFIG_FIELDS)
        if request.secret and secret_key(request.secret) is None:
            violations.append(
                FieldViolation("secret", "must be whsec_ and the base64 of 24 to 64 bytes")
            )
        raise_if_any(violations)
        tenant = current_tenant()
        webhook_id = f"wh_{secrets.token_hex(8)}"
        secret = request.secret or generate_secret()
        record = await self._webhooks.create(
            WebhookRecord(
                tenant=tenant,
                id=webhook_id,
                secret=seal_secret(self._keyring, tenant, webhook_id, secret),
                **_config_values(new, CONFIG_FIELDS),
            )
        )
        await self._deliveries.changed(tenant, webhook_id)
        return webhook_pb2.CreateWebhookResponse(webhook=webhook_to_proto(record), secret=secret)

    async def GetWebhook(
        self, request: webhook_pb2.GetWebhookRequest, context: Context
    ) -> webhook_pb2.GetWebhookResponse:
        record = await self._require(request.webhook_id, "webhook_id")
        return webhook_pb2.GetWebhookResponse(webhook=webhook_to_proto(record))

    async def ListWebhooks(
        self, request: webhook_pb2.ListWebhooksRequest, context: Context
    ) -> webhook_pb2.ListWebhooksResponse:
        limit = page_size(request.page_size)
        after_id = decode_page_token(request.page_token, "", WEBHOOK_ID)
        records = await self._webhooks.list_page(current_tenant(), after_id or "", limit + 1)
        page, more = records[:limit], len(records) > limit
        return webhook_pb2.ListWebhooksResponse(
            webhooks=[webhook_to_proto(r) for r in page],
            next_page_token=encode_page_token(page[-1].id, "") if more else "",
        )

    async def UpdateWebhook(
        self, request: webhook_pb2.UpdateWebhookRequest, context: Context
    ) -> webhook_pb2.UpdateWebhookResponse:
        new = request.webhook
        paths = list(request.update_mask.paths)
        if paths == ["*"]:
            paths = list(UPDATABLE)
        violations = _check_id("webhook.id", new.id)
        if not paths:
            violations.append(FieldViolation("update_mask", "name at least one field"))
        for path in paths:
            if path not in UPDATABLE:
                violations.append(
                    FieldViolation(
                        "update_mask", f"{path!r} is not updatable; use " + ", ".join(UPDATABLE)
                    )
                )
        config = [p for p in paths if p in CONFIG_FIELDS]
        violations += _check_config(new, config, prefix="webhook.")
        raise_if_any(violations)
        tenant = current_tenant()
        current = await self._require(new.id, "webhook.id")
        changes = _config_values(new, config)
        status_row = None
        if "enabled" in paths and new.enabled != current.enabled:
            status = ACTIVE if new.enabled else DISABLED
            reason = "enabled by a client" if new.enabled else "disabled by a client"
            changes |= {"status": status, "disabled_reason": "" if new.enabled else reason}
            change = event_pb2.WebhookStatusChanged(
                webhook_id=current.id, status=status, reason=reason, cursor=current.cursor
            )
            status_row = self._events.row(tenant, "", change)
        record = await self._webhooks.update(tenant, new.id, changes, status_row)
        if record is None:
            raise WebhookNotFound(new.id)
        if status_row is not None:
            self._events.committed()
        await self._deliveries.changed(tenant, new.id)
        return webhook_pb2.UpdateWebhookResponse(webhook=webhook_to_proto(record))

    async def DeleteWebhook(
        self, request: webhook_pb2.DeleteWebhookRequest, context: Context
    ) -> webhook_pb2.DeleteWebhookResponse:
        raise_if_any(_check_id("webhook_id", request.webhook_id))
        tenant = current_tenant()
        deleted = await self._webhooks.delete(tenant, request.webhook_id)
        await self._deliveries.changed(tenant, request.webhook_id)
        if not deleted and not request.allow_missing:
            raise WebhookNotFound(request.webhook_id)
        return webhook_pb2.DeleteWebhookResponse(deleted=deleted)

    async def TestWebhook(
        self, request: webhook_pb2.TestWebhookRequest, context: Context
    ) -> webhook_pb2.TestWebhookResponse:
        record = await self._require(request.webhook_id, "webhook_id")
        answer = await self._deliveries.test(record)
        return webhook_pb2.TestWebhookResponse(
            status_code=answer.status,
            body_snippet=answer.body,
            latency_ms=int(answer.seconds * 1000),
            error=answer.error,
        )

    async def _require(self, webhook_id: str, field: str) -> WebhookRecord:
        raise_if_any(_check_id(field, webhook_id))
        record = await self._webhooks.get(current_tenant(), webhook_id, lag=True)
        if record is None:
            raise WebhookNotFound(webhook_id)
        return record


def _check_id(field: str, value: str) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "required")]
    if len(value) > WEBHOOK_ID_CHARS or not value.isascii() or not value.isprintable():
        return [FieldViolation(field, "not a webhook id (wh_ and 16 hex digits)")]
    return []


def _check_config(
    new: webhook_pb2.Webhook, fields: Sequence[str], prefix: str = "webhook."
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if "url" in fields:
        violations += check_webhook_url(prefix + "url", new.url)
    if "instance_ids" in fields:
        if len(new.instance_ids) > MAX_INSTANCE_IDS:
            violations.append(
                FieldViolation(prefix + "instance_ids", f"at most {MAX_INSTANCE_IDS}")
            )
        for instance_id in new.instance_ids[:MAX_INSTANCE_IDS]:
            violations += check_instance_id(prefix + "instance_ids", instance_id)
    if "types" in fields and any(
        t not in event_pb2.EventType.values() or t == 0 for t in new.types
    ):
        violations.append(FieldViolation(prefix + "types", "unknown event type"))
    if "format" in fields and new.format not in webhook_pb2.WebhookFormat.values():
        violations.append(FieldViolation(prefix + "format", "unknown format"))
    if "description" in fields:
        violations += check_text(prefix + "description", new.description, MAX_DESCRIPTION)
    return violations


def _config_values(new: webhook_pb2.Webhook, fields: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "url": new.url,
        "instance_ids": tuple(dict.fromkeys(new.instance_ids)),
        "types": tuple(sorted(set(new.types))),
        "format": new.format or webhook_pb2.WEBHOOK_FORMAT_PROTO_JSON,
        "description": new.description,
    }
    return {name: values[name] for name in fields}


def _time(micros: int) -> Timestamp | None:
    if not micros:
        return None
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def webhook_to_proto(record: WebhookRecord) -> webhook_pb2.Webhook:
    delivery = webhook_pb2.WebhookDelivery(
        status=record.status,  # type: ignore[arg-type]
        cursor=record.cursor,
        lag_events=record.lag_events,
        attempts=record.attempts,
        next_attempt_time=_time(record.next_attempt_us),
        last_error=record.last_error,
        last_error_time=_time(record.last_error_us),
        failing_since=_time(record.failing_since_us),
        disabled_reason=record.disabled_reason,
        last_success_time=_time(record.last_success_us),
    )
    return webhook_pb2.Webhook(
        id=record.id,
        url=record.url,
        instance_ids=record.instance_ids,
        types=record.types,  # type: ignore[arg-type]
        format=record.format,  # type: ignore[arg-type]
        description=record.description,
        enabled=record.enabled,
        create_time=_time(record.create_time_us),
        update_time=_time(record.update_time_us),
        delivery=delivery,
    )
