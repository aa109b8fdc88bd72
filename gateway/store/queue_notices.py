"""A PostgreSQL notification for the node that owns an instance, sent when another node
committed a message to the instance's outbox while no node served it and the instance found
an owner in between (its adoption may have read the outbox before that commit). The owner
then schedules what its queue is missing. Only needed in that race; a notification that is
lost (its listening connection was down) leaves the message QUEUED until the instance's next
adoption."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

CHANNEL = "zapgate_queued"

InstanceKey = tuple[str, str]  # (tenant, instance id)


def notice(node_id: str, key: InstanceKey) -> sa.Select[tuple[Any]]:
    return sa.select(sa.func.pg_notify(CHANNEL, json.dumps([node_id, *key])))


def for_node(node_id: str, queued: Callable[[InstanceKey], None]) -> Callable[[str], None]:
    """The listener of CHANNEL for one node (on its one listening connection,
    events/wakeups.py): calls `queued` with each instance named to it."""

    def on_notice(payload: str) -> None:
        target, tenant, instance_id = json.loads(payload)
        if target == node_id:
            queued((str(tenant), str(instance_id)))

    return on_notice
