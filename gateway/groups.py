"""Groups of an instance, through its engine, under the instance's group caps: the one place
GroupService's creations and adds are counted (ratelimit/groups.py, on the wall clock). What
was made is also written down (gateway/store/group_actions.py) and read back the first time
an instance is used after a start, so the caps hold across restarts. Every call names an
instance of the calling tenant (InstanceNotFound otherwise)."""

from __future__ import annotations

import asyncio
import dataclasses

from zapgate.gateway.connections.engines import Engines
from zapgate.gateway.rpc.errors import RateLimited
from zapgate.gateway.sending.dispatcher import policy_of
from zapgate.gateway.store.group_actions import GroupActionLog
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.ratelimit.groups import GroupPacer, GroupRoom
from zapgate.sessions import groups as g
from zapgate.sessions.errors import EngineError
from zapgate.sessions.groups import GroupInfo, ParticipantOutcome

# Outcomes after which nobody was added or invited: the add is given back to the budget.
NOT_MADE = {g.NOT_ON_WHATSAPP, g.ALREADY_PARTICIPANT, g.FAILED}


class GroupDesk:
    def __init__(
        self,
        engines: Engines,
        instances: InstanceRepository,
        pacer: GroupPacer,
        log: GroupActionLog,
    ) -> None:
        self.engines = engines
        self._instances = instances
        self._pacer = pacer
        self._log = log
        self._restored: set[str] = set()
        self._restoring = asyncio.Lock()

    async def _require(self, tenant: str, instance_id: str) -> InstanceRecord:
        """The instance, with its counts of before this start in the pacer."""
        record = await self._instances.require(tenant, instance_id)
        async with self._restoring:
            if record.key not in self._restored:
                rows = await self._log.recent(tenant, instance_id)
                self._pacer.restore(
                    record.key,
                    [(at / 1e6, count) for kind, at, count in rows if kind == "create"],
                    [(at / 1e6, count) for kind, at, count in rows if kind == "add"],
                )
                self._restored.add(record.key)
        return record

    async def room(self, tenant: str, instance_id: str) -> GroupRoom:
        record = await self._require(tenant, instance_id)
        return self._pacer.room(record.key, policy_of(record))

    async def create(
        self, tenant: str, instance_id: str, name: str, phones: list[str]
    ) -> tuple[GroupInfo, list[ParticipantOutcome]]:
        record = await self._require(tenant, instance_id)
        policy = policy_of(record)
        created = self._pacer.take_creation(record.key, policy)
        if not created.granted:
            raise RateLimited("CreateGroup", created.retry_after)
        adds = self._pacer.take_adds(record.key, len(phones), policy) if phones else None
        asked = phones[: adds.granted] if adds is not None else []
        try:
            group, outcomes = await self.engines.create_group(tenant, instance_id, name, asked)
        except EngineError:
            self._pacer.refund_creation(record.key)
            if adds is not None:
                self._pacer.refund_adds(record.key, adds.granted)
            raise
        not_made = sum(o.status in NOT_MADE for o in outcomes)
        self._pacer.refund_adds(record.key, not_made)
        await self._log.record(tenant, instance_id, "create", 1)
        await self._log.record(tenant, instance_id, "add", len(asked) - not_made)
        over = [ParticipantOutcome(p, g.RATE_LIMITED) for p in phones[len(asked) :]]
        return group, outcomes + over

    async def update_participants(
        self, tenant: str, instance_id: str, group_jid: str, action: str, phones: list[str]
    ) -> list[ParticipantOutcome]:
        if action != "add":
            return await self.engines.update_participants(
                tenant, instance_id, group_jid, action, phones
            )
        record = await self._require(tenant, instance_id)
        adds = self._pacer.take_adds(record.key, len(phones), policy_of(record))
        if not adds.granted:
            raise RateLimited("participant add", adds.retry_after)
        asked = phones[: adds.granted]
        try:
            outcomes = await self.engines.update_participants(
                tenant, instance_id, group_jid, action, asked
            )
        except EngineError:
            self._pacer.refund_adds(record.key, adds.granted)
            raise
        not_made = sum(o.status in NOT_MADE for o in outcomes)
        self._pacer.refund_adds(record.key, not_made)
        await self._log.record(tenant, instance_id, "add", adds.granted - not_made)
        over = [ParticipantOutcome(p, g.RATE_LIMITED) for p in phones[adds.granted :]]
        return outcomes + over


def without_participants(group: GroupInfo) -> GroupInfo:
    return dataclasses.replace(group, participants=())
