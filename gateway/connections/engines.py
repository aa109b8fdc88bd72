"""What services ask of an instance's engine, beyond its connection (which the supervisor
owns): media downloads, contacts, number checks, LID lookups, the simulated phone. Each call
names an instance of the calling tenant (InstanceNotFound otherwise); failures are the engine's own
types (sessions/errors.py), which the call guard turns into statuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from zapgate.engine.v1 import worker_pb2
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.sessions import groups
from zapgate.sessions.engine import Contact, NumberCheck
from zapgate.sessions.groups import GroupInfo, JoinRequest, ParticipantOutcome
from zapgate.sessions.pool import WorkerPool
from zapgate.sessions.sim_phone import PhoneLog, Received
from zapgate.sessions.simwa_client import list_received


def instance_dir(root: Path, tenant: str, instance_id: str) -> Path:
    """An instance's private runtime directory (its plaintext session store lives here)."""
    return root / tenant / instance_id


class Engines:
    def __init__(
        self,
        pool: WorkerPool,
        instances: InstanceRepository,
        runtime_dir: Path,
        sim_server: str | None = None,
    ) -> None:
        self._pool = pool
        self._instances = instances
        self._runtime_dir = runtime_dir
        self._sim_server = sim_server  # host:port: the phone side lives there

    async def download_media(self, tenant: str, instance_id: str, media_ref: str) -> bytes:
        record = await self._instances.require(tenant, instance_id)
        return await self._pool.download_media(record.key, media_ref)

    async def contacts(self, tenant: str, instance_id: str) -> list[Contact]:
        record = await self._instances.require(tenant, instance_id)
        return await self._pool.contacts(record.key)

    async def check_numbers(
        self, tenant: str, instance_id: str, phones: list[str]
    ) -> list[NumberCheck]:
        record = await self._instances.require(tenant, instance_id)
        return await self._pool.check_numbers(record.key, phones)

    async def resolve_jids(self, tenant: str, instance_id: str, jids: list[str]) -> list[str]:
        record = await self._instances.require(tenant, instance_id)
        return await self._pool.resolve_jids(record.key, jids)

    async def mark_read(
        self, tenant: str, instance_id: str, chat_jid: str, sender_jid: str, message_ids: list[str]
    ) -> None:
        record = await self._instances.require(tenant, instance_id)
        await self._pool.mark_read(record.key, chat_jid, sender_jid, message_ids)

    async def reject_call(
        self, tenant: str, instance_id: str, caller_jid: str, call_id: str
    ) -> None:
        record = await self._instances.require(tenant, instance_id)
        await self._pool.reject_call(record.key, caller_jid, call_id)

    async def send_presence(
        self, tenant: str, instance_id: str, chat_jid: str, presence: str
    ) -> None:
        record = await self._instances.require(tenant, instance_id)
        await self._pool.send_presence(record.key, chat_jid, presence)

    # Groups: each a GroupCall into the instance's worker (sessions/groups.py).

    async def _group_call(
        self, tenant: str, instance_id: str, method: str, data: bytes = b"", **args: object
    ) -> str:
        record = await self._instances.require(tenant, instance_id)
        return await self._pool.group_call(record.key, method, data, **args)

    async def list_groups(self, tenant: str, instance_id: str) -> list[GroupInfo]:
        return groups.decode_groups(await self._group_call(tenant, instance_id, "list_groups"))

    async def group_info(self, tenant: str, instance_id: str, group_jid: str) -> GroupInfo:
        answer = await self._group_call(tenant, instance_id, "group_info", group_jid=group_jid)
        return groups.decode_group(answer)

    async def create_group(
        self, tenant: str, instance_id: str, name: str, phones: list[str]
    ) -> tuple[GroupInfo, list[ParticipantOutcome]]:
        answer = await self._group_call(
            tenant, instance_id, "create_group", name=name, phones=phones
        )
        return groups.decode_created(answer)

    async def update_participants(
        self, tenant: str, instance_id: str, group_jid: str, action: str, phones: list[str]
    ) -> list[ParticipantOutcome]:
        answer = await self._group_call(
            tenant,
            instance_id,
            "update_participants",
            group_jid=group_jid,
            action=action,
            phones=phones,
        )
        return groups.decode_outcomes(answer)

    async def set_group_name(
        self, tenant: str, instance_id: str, group_jid: str, name: str
    ) -> None:
        await self._group_call(
            tenant, instance_id, "set_group_name", group_jid=group_jid, name=name
        )

    async def set_group_topic(
        self, tenant: str, instance_id: str, group_jid: str, topic: str
    ) -> None:
        await self._group_call(
            tenant, instance_id, "set_group_topic", group_jid=group_jid, topic=topic
        )

    async def set_group_settings(
        self,
        tenant: str,
        instance_id: str,
        group_jid: str,
        announce: bool | None,
        locked: bool | None,
    ) -> None:
        await self._group_call(
            tenant,
            instance_id,
            "set_group_settings",
            group_jid=group_jid,
            announce=announce,
            locked=locked,
        )

    async def set_group_photo(
        self, tenant: str, instance_id: str, group_jid: str, jpeg: bytes
    ) -> str:
        answer = await self._group_call(
            tenant, instance_id, "set_group_photo", jpeg, group_jid=group_jid
        )
        return str(json.loads(answer))

    async def join_requests(
        self, tenant: str, instance_id: str, group_jid: str
    ) -> list[JoinRequest]:
        answer = await self._group_call(tenant, instance_id, "join_requests", group_jid=group_jid)
        return groups.decode_requests(answer)

    async def invite_link(self, tenant: str, instance_id: str, group_jid: str, revoke: bool) -> str:
        answer = await self._group_call(
            tenant, instance_id, "invite_link", group_jid=group_jid, revoke=revoke
        )
        return str(json.loads(answer))

    async def preview_invite(self, tenant: str, instance_id: str, code: str) -> GroupInfo:
        answer = await self._group_call(tenant, instance_id, "preview_invite", code=code)
        return groups.decode_group(answer)

    async def join_group(self, tenant: str, instance_id: str, code: str) -> str:
        answer = await self._group_call(tenant, instance_id, "join_group", code=code)
        return str(json.loads(answer))

    async def leave_group(self, tenant: str, instance_id: str, group_jid: str) -> None:
        await self._group_call(tenant, instance_id, "leave_group", group_jid=group_jid)

    async def simulate(
        self, tenant: str, instance_id: str, request: worker_pb2.SimulateRequest
    ) -> None:
        record = await self._instances.require(tenant, instance_id)
        request.key = record.key
        await self._pool.simulate(request)

    async def phone_log(self, tenant: str, instance_id: str) -> list[Received]:
        """What the simulator's phones received from this instance (simulator only)."""
        record = await self._instances.require(tenant, instance_id)
        if self._sim_server is not None:
            # The simulated WhatsApp server keeps it, by device (nothing before pairing).
            return await list_received(self._sim_server, record.jid) if record.jid else []
        log_file = PhoneLog(instance_dir(self._runtime_dir, tenant, instance_id))
        return await asyncio.to_thread(log_file.read)
