"""Each instance's contacts and number checks: contacts are synced from the engine on
request and soon after every connect; number lookups are paced by the instance's policy
(LookupBudget) and answered from a TTL cache when possible."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from zapgate.gateway.connections.engines import Engines
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.rpc.errors import ZapgateError
from zapgate.gateway.rpc.validation import check_phone
from zapgate.gateway.sending.dispatcher import policy_of
from zapgate.gateway.store.contacts import ContactRepository, SyncCounts
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.number_checks import NumberCheckCache
from zapgate.gateway.tasks import TaskSet
from zapgate.ratelimit.lookups import LookupBudget
from zapgate.sessions.engine import NumberCheck
from zapgate.sessions.errors import EngineError
from zapgate.v1 import event_pb2
from zapgate.v1 import instance_pb2 as ipb

log = logging.getLogger(__name__)
# Automatic syncs: at most this many at once (a restart connects every instance together),
# and not again within this many seconds of the last (a brief drop is no reason to resync).
AUTO_SYNC_SLOTS = 4
AUTO_SYNC_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class NumberAnswer:
    phone: str
    check: NumberCheck | None = None  # None when not checked (see error_reason)
    cached: bool = False
    error_reason: str = ""  # invalid_phone | rate_limited
    error: str = ""
    retry_after: float = 0.0


class ContactBook:
    def __init__(
        self,
        engines: Engines,
        instances: InstanceRepository,
        contacts: ContactRepository,
        cache: NumberCheckCache,
        budget: LookupBudget,
        events: EventLog,
        sync_delay_seconds: float,
    ) -> None:
        self._engines = engines
        self._instances = instances
        self.contacts = contacts
        self._cache = cache
        self._budget = budget
        self._events = events
        self._sync_delay = sync_delay_seconds
        self._sync_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks = TaskSet("contacts")
        self._auto_slots = asyncio.Semaphore(AUTO_SYNC_SLOTS)
        self._auto_synced_at: dict[str, float] = {}  # instance key -> monotonic time

    async def sync(self, tenant: str, instance_id: str) -> SyncCounts:
        async with self._sync_locks[f"{tenant}/{instance_id}"]:
            found = await self._engines.contacts(tenant, instance_id)
            counts = await self.contacts.replace_all(tenant, instance_id, found)
        synced = event_pb2.ContactsSynced(**dataclasses.asdict(counts))
        await self._events.append(tenant, instance_id, synced)
        return counts

    async def resolve_jids(self, tenant: str, instance_id: str, jids: list[str]) -> list[str]:
        """Each JID's other identity from the engine's LID map ("" unknown); no lookup budget:
        WhatsApp is not asked."""
        return await self._engines.resolve_jids(tenant, instance_id, jids)

    async def state_changed(self, record: InstanceRecord) -> None:
        """After a connect, once the engine had time to receive the phone's contacts."""
        if record.state != ipb.INSTANCE_STATE_CONNECTED:
            return
        now, last = time.monotonic(), self._auto_synced_at.get(record.key)
        if last is not None and now - last < AUTO_SYNC_INTERVAL_SECONDS:
            return
        self._auto_synced_at[record.key] = now
        self._tasks.spawn(self._sync_soon(record.tenant, record.id))

    async def _sync_soon(self, tenant: str, instance_id: str) -> None:
        await asyncio.sleep(self._sync_delay)
        try:
            async with self._auto_slots:
                counts = await self.sync(tenant, instance_id)
        except (ZapgateError, EngineError) as error:  # disconnected, deleted: next connect syncs
            log.info("contact sync of %s/%s skipped: %s", tenant, instance_id, error)
            return
        log.info("contacts of %s/%s synced: %s", tenant, instance_id, counts)

    async def check_numbers(
        self, tenant: str, instance_id: str, phones: list[str]
    ) -> list[NumberAnswer]:
        record = await self._instances.require(tenant, instance_id)
        answers: dict[str, NumberAnswer] = {}
        valid = []
        for phone in dict.fromkeys(phones):
            violations = check_phone("phones", phone) if phone else []
            if violations or not phone:
                reason = violations[0].description if violations else "empty"
                answers[phone] = NumberAnswer(phone, error_reason="invalid_phone", error=reason)
            else:
                valid.append(phone)
        cached = await self._cache.fresh(tenant, instance_id, valid)
        answers.update({p: NumberAnswer(p, check, cached=True) for p, check in cached.items()})
        to_ask = [phone for phone in valid if phone not in cached]
        grant = self._budget.take(record.key, len(to_ask), policy_of(record))
        asked, refused = to_ask[: grant.granted], to_ask[grant.granted :]
        if asked:
            try:
                checks = await self._engines.check_numbers(tenant, instance_id, asked)
            except (ZapgateError, EngineError):
                self._budget.refund(record.key, grant)
                raise
            await self._cache.save(tenant, instance_id, checks)
            answers.update({check.phone: NumberAnswer(check.phone, check) for check in checks})
        for phone in refused:
            answers[phone] = NumberAnswer(
                phone,
                error_reason="rate_limited",
                error="over the instance's number_checks caps; retry later",
                retry_after=grant.retry_after,
            )
        unanswered = NumberAnswer("", error_reason="no_answer", error="WhatsApp gave no answer")
        return [
            answers.get(phone, dataclasses.replace(unanswered, phone=phone)) for phone in phones
        ]

    def forget(self, tenant: str, instance_id: str) -> None:
        self._budget.forget(f"{tenant}/{instance_id}")
        self._auto_synced_at.pop(f"{tenant}/{instance_id}", None)

    async def close(self) -> None:
        await self._tasks.cancel()
