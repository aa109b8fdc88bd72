"""Cluster mode: a message accepted for an instance no node serves is committed to the
shared outbox, as a single gateway queues one for a disconnected instance; the node that
takes the instance next schedules it when it adopts it (Dispatcher.adopt). One question
remains after the commit: did a node take the instance meanwhile? Answered by the node's
ownership (cluster/ownership.py)."""

from __future__ import annotations

from typing import Protocol


class UnownedSends(Protocol):
    async def accepted_unowned(self, tenant: str, instance_id: str) -> bool:
        """After committing a message for an instance nobody served: True when this node
        serves it now (schedule it here). When another node does, that node is told to
        schedule what its queue misses (its adoption may have read the outbox before the
        commit); False."""
        ...
