"""A PostgreSQL notification for the node an instance is handed over (or placed) to, so it
claims the instance at once instead of at its next look (up to TTL/3 later): the moved
instance's disconnect lasts until then. Only a speed-up: a notification that is lost (its
connection dropped) costs that wait, nothing else. The node listens on its one listening
connection (events/wakeups.py `on_channel`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

CHANNEL = "zapgate_handover"


def notice(target: str) -> sa.Select[tuple[Any]]:
    """Sent with the transaction that reserves a lease for `target` (on its commit)."""
    return sa.select(sa.func.pg_notify(CHANNEL, target))


def for_node(node_id: str, wake: Callable[[], None]) -> Callable[[str], None]:
    """The listener of CHANNEL for one node (on the node's one listening connection,
    events/wakeups.py): wakes it for the notices addressed to it."""

    def on_notice(payload: str) -> None:
        if payload == node_id:
            wake()

    return on_notice
