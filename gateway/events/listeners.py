"""The supervisor tells one listener of every transition and receipt; this one passes
receipts to the send dispatcher and transitions to it and to every other watcher (contact
sync after a connect)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from zapgate.gateway.connections.supervisor import Listener
from zapgate.gateway.store.instances import InstanceRecord


class StateWatcher(Protocol):
    async def state_changed(self, record: InstanceRecord) -> None: ...


class Listeners:
    def __init__(self, dispatcher: Listener, watchers: Sequence[StateWatcher]) -> None:
        self._dispatcher = dispatcher
        self._watchers = tuple(watchers)

    async def state_changed(self, record: InstanceRecord) -> None:
        await self._dispatcher.state_changed(record)
        for watcher in self._watchers:
            await watcher.state_changed(record)

    async def on_receipt(
        self,
        instance_key: str,
        message_ids: tuple[str, ...],
        kind: str,
        receipt_from: tuple[str, str] = ("", ""),
    ) -> None:
        await self._dispatcher.on_receipt(instance_key, message_ids, kind, receipt_from)
