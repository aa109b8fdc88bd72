"""InstanceService: create, read, list, update and delete instances of the caller's tenant."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from zapgate.gateway.connections.supervisor import Supervisor
from zapgate.gateway.contacts import ContactBook
from zapgate.gateway.events.calls import check_call_settings
from zapgate.gateway.groups import GroupDesk
from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import FieldViolation, InstanceNotFound, InvalidArgument
from zapgate.gateway.rpc.paging import (
    INSTANCE_ID,
    decode_page_token,
    encode_page_token,
    page_size,
)
from zapgate.gateway.rpc.tenancy import visible_instances
from zapgate.gateway.rpc.validation import (
    check_display_name,
    check_instance_id,
    check_labels,
    check_phone,
    check_proxy_url,
    check_text,
    raise_if_any,
)
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.services.convert import (
    instance_to_proto,
    policy_from_proto,
    stats_to_proto,
    update_to_proto,
)
from zapgate.gateway.store.instances import MUTABLE_FIELDS, InstanceRecord, InstanceRepository
from zapgate.v1 import instance_pb2, instance_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class InstanceService(instance_pb2_grpc.InstanceServiceServicer):
    def __init__(
        self,
        instances: InstanceRepository,
        supervisor: Supervisor,
        dispatcher: Dispatcher,
        contact_book: ContactBook,
        groups: GroupDesk,
    ) -> None:
        self._groups = groups
        self._instances = instances
        self._supervisor = supervisor
        self._dispatcher = dispatcher
        self._contact_book = contact_book

    async def CreateInstance(
        self, request: instance_pb2.CreateInstanceRequest, context: Context
    ) -> instance_pb2.CreateInstanceResponse:
        instance_id = request.instance_id or generate_instance_id()
        raise_if_any(
            check_instance_id("instance_id", instance_id)
            + check_display_name("display_name", request.display_name)
            + check_phone("phone", request.phone)
            + check_labels("labels", request.labels)
            + check_proxy_url("proxy_url", request.proxy_url)
        )
        record, created = await self._instances.create(
            InstanceRecord(
                tenant=current_tenant(),
                id=instance_id,
                display_name=request.display_name or instance_id,
                phone=request.phone,
                state=instance_pb2.INSTANCE_STATE_DISCONNECTED,
                labels=dict(request.labels),
                proxy_url=request.proxy_url,
            )
        )
        return instance_pb2.CreateInstanceResponse(
            instance=instance_to_proto(record), created=created
        )

    async def GetInstance(
        self, request: instance_pb2.GetInstanceRequest, context: Context
    ) -> instance_pb2.GetInstanceResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        record = await self._instances.require(current_tenant(), request.instance_id)
        return instance_pb2.GetInstanceResponse(instance=instance_to_proto(record))

    async def ListInstances(
        self, request: instance_pb2.ListInstancesRequest, context: Context
    ) -> instance_pb2.ListInstancesResponse:
        if request.state not in instance_pb2.InstanceState.values():
            raise InvalidArgument([FieldViolation("state", "unknown state")])
        filter_key = f"state={request.state}"
        limit = page_size(request.page_size)
        after_id = decode_page_token(request.page_token, filter_key, INSTANCE_ID)
        records = await self._instances.list_page(
            current_tenant(),
            state=request.state or None,
            after_id=after_id or "",
            limit=limit + 1,  # one more tells whether another page exists
            only=visible_instances() or (),  # a scoped key lists its scope only
        )
        page, more = records[:limit], len(records) > limit
        next_token = encode_page_token(page[-1].id, filter_key) if more else ""
        return instance_pb2.ListInstancesResponse(
            instances=[instance_to_proto(r) for r in page], next_page_token=next_token
        )

    async def UpdateInstance(
        self, request: instance_pb2.UpdateInstanceRequest, context: Context
    ) -> instance_pb2.UpdateInstanceResponse:
        instance_id = request.instance.id
        paths = list(request.update_mask.paths)
        if paths == ["*"]:
            paths = list(MUTABLE_FIELDS)
        violations = check_instance_id("instance.id", instance_id)
        if not paths:
            violations.append(FieldViolation("update_mask", "name at least one field"))
        for path in paths:
            if path not in MUTABLE_FIELDS:
                violations.append(
                    FieldViolation(
                        "update_mask",
                        f"{path!r} is not updatable; use " + ", ".join(MUTABLE_FIELDS),
                    )
                )
        new = request.instance
        if "display_name" in paths:
            violations += check_display_name("instance.display_name", new.display_name)
        if "phone" in paths:
            violations += check_phone("instance.phone", new.phone)
        if "labels" in paths:
            violations += check_labels("instance.labels", new.labels)
        if "proxy_url" in paths:
            violations += check_proxy_url("instance.proxy_url", new.proxy_url)
        reset_policy = "send_policy" in paths and not new.HasField("send_policy")
        if "send_policy" in paths and not reset_policy:
            policy = policy_from_proto(new.send_policy)
            violations += [
                FieldViolation(f"instance.send_policy.{name}", description)
                for name, description in policy.violations()
            ]
        if "call_settings" in paths:
            violations += check_call_settings("instance.call_settings", new.call_settings)
        raise_if_any(violations)
        changes: dict[str, Any] = {}
        if "display_name" in paths:
            changes["display_name"] = new.display_name or instance_id
        if "phone" in paths:
            changes["phone"] = new.phone
        if "labels" in paths:
            changes["labels"] = dict(new.labels)
        if "proxy_url" in paths:
            changes["proxy_url"] = new.proxy_url
        if "call_settings" in paths:  # unset: calls ring, as by default
            settings = new.call_settings
            changes["call_settings"] = (
                {"reject_calls": settings.reject_calls, "reply_text": settings.reply_text}
                if new.HasField("call_settings")
                else None
            )
        if "send_policy" in paths:  # an unset policy means the defaults
            changes["send_policy"] = None if reset_policy else dataclasses.asdict(policy)
        record = await self._instances.update(current_tenant(), instance_id, changes)
        if "send_policy" in paths:
            await self._dispatcher.policy_changed(record.tenant, record.id)
        return instance_pb2.UpdateInstanceResponse(instance=instance_to_proto(record))

    async def DeleteInstance(
        self, request: instance_pb2.DeleteInstanceRequest, context: Context
    ) -> instance_pb2.DeleteInstanceResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        record = await self._instances.get(current_tenant(), request.instance_id)
        if record is not None:
            await self._supervisor.forget(record)
            await self._dispatcher.forget(record.tenant, record.id)
            self._contact_book.forget(record.tenant, record.id)
        deleted = await self._instances.delete(current_tenant(), request.instance_id)
        if not deleted and not request.allow_missing:
            raise InstanceNotFound(request.instance_id)
        return instance_pb2.DeleteInstanceResponse(deleted=deleted)

    async def Connect(
        self, request: instance_pb2.ConnectRequest, context: Context
    ) -> AsyncIterator[instance_pb2.ConnectResponse]:
        raise_if_any(
            check_instance_id("instance_id", request.instance_id)
            + check_phone("phone", request.phone)
        )
        updates = self._supervisor.connect(current_tenant(), request.instance_id, request.phone)
        async for update in updates:
            yield await update_to_proto(update)

    async def Logout(
        self, request: instance_pb2.LogoutRequest, context: Context
    ) -> instance_pb2.LogoutResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        record = await self._supervisor.logout(current_tenant(), request.instance_id)
        return instance_pb2.LogoutResponse(instance=instance_to_proto(record))

    async def Reconnect(
        self, request: instance_pb2.ReconnectRequest, context: Context
    ) -> instance_pb2.ReconnectResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        record = await self._supervisor.reconnect(current_tenant(), request.instance_id)
        return instance_pb2.ReconnectResponse(instance=instance_to_proto(record))

    async def GetInstanceStats(
        self, request: instance_pb2.GetInstanceStatsRequest, context: Context
    ) -> instance_pb2.GetInstanceStatsResponse:
        instance_id = await self._require_id(request.instance_id)
        stats = await self._dispatcher.stats(current_tenant(), instance_id)
        rates = await self._dispatcher.receipt_rates(current_tenant(), instance_id)
        message = stats_to_proto(stats, *rates)
        room = await self._groups.room(current_tenant(), instance_id)
        message.remaining_group_creations_day = room.creations_day
        message.remaining_participant_adds_hour = room.adds_hour
        message.remaining_participant_adds_day = room.adds_day
        return instance_pb2.GetInstanceStatsResponse(stats=message)

    async def PauseSending(
        self, request: instance_pb2.PauseSendingRequest, context: Context
    ) -> instance_pb2.PauseSendingResponse:
        raise_if_any(check_text("reason", request.reason, 4096))  # then cut to the column's 200
        instance_id = await self._require_id(request.instance_id)
        reason = request.reason.strip()[:200] or "paused_by_client"
        record = await self._dispatcher.pause(current_tenant(), instance_id, reason)
        return instance_pb2.PauseSendingResponse(instance=instance_to_proto(record))

    async def ResumeSending(
        self, request: instance_pb2.ResumeSendingRequest, context: Context
    ) -> instance_pb2.ResumeSendingResponse:
        instance_id = await self._require_id(request.instance_id)
        record = await self._dispatcher.resume(current_tenant(), instance_id)
        return instance_pb2.ResumeSendingResponse(instance=instance_to_proto(record))

    async def _require_id(self, instance_id: str) -> str:
        raise_if_any(check_instance_id("instance_id", instance_id))
        await self._instances.require(current_tenant(), instance_id)
        return instance_id


def generate_instance_id() -> str:
    return f"inst-{secrets.token_hex(6)}"
