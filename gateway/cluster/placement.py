"""Where instances should run, decided from the live nodes' loads (pure: no database, no
clock). Every node computes the same answers from the same loads, so they agree without
talking to each other:

- a new instance goes to the least loaded live node with room (ties: the node asking);
- the fair share is every owned instance over the live nodes that take instances (not a
  draining one: its maximum is 0), rounded up: a node above it hands the excess to nodes
  below it, a few at a time;
- a stopping node hands everything to the others, least loaded first, within their room."""

from __future__ import annotations

import math
from collections.abc import Callable

from zapgate.gateway.store.leases import NodeLoad

# A node is live while its heartbeat (every TTL/3) is younger than this share of the TTL: a
# dead node stops counting before its leases expire, so nobody waits for it to claim them.
LIVE_HEARTBEAT_SHARE = 2 / 3


def live_within(ttl_seconds: float) -> float:
    """How recent a node's heartbeat must be for it to count as live."""
    return ttl_seconds * LIVE_HEARTBEAT_SHARE


def least_loaded(loads: list[NodeLoad], me: str, mine: int) -> NodeLoad | None:
    """The node a new instance should go to: None when it is this one (it is among the
    least loaded, or no other live node has room)."""
    others = [n for n in loads if n.node_id != me and n.owned < n.max_instances]
    if not others:
        return None
    best = min(others, key=lambda n: (n.owned, n.node_id))
    return best if best.owned < mine else None


def fair_share(loads: list[NodeLoad], me: str, mine: int) -> int:
    """Every owned instance over the live nodes that take instances (this one included),
    rounded up. A draining node's instances count (they are about to land on the others)
    but the node does not: counting it would lower the share, and the others would hand
    instances around while it drains into them."""
    others = [n for n in loads if n.node_id != me]
    total = mine + sum(n.owned for n in others)
    takers = 1 + sum(1 for n in others if n.max_instances > 0)
    return math.ceil(total / takers)


def rebalance(loads: list[NodeLoad], me: str, mine: int, batch: int) -> list[NodeLoad]:
    """The targets of this node's next hand-overs, one per instance to move (at most
    `batch`): only above the fair share, only to nodes below it (and within their room)."""
    share = fair_share(loads, me, mine)
    excess = min(mine - share, batch)
    if excess <= 0:
        return []
    return _fill(loads, me, excess, lambda n: min(share, n.max_instances))


def drain(loads: list[NodeLoad], me: str, count: int) -> list[NodeLoad]:
    """The targets for a stopping node's instances (as many as the others have room for,
    up to `count`), least loaded first."""
    return _fill(loads, me, count, lambda n: n.max_instances)


def _fill(
    loads: list[NodeLoad], me: str, count: int, ceiling: Callable[[NodeLoad], int]
) -> list[NodeLoad]:
    """Water-filling: each instance to the other node with the fewest (owned + given so
    far) that is still below its ceiling."""
    given = {n.node_id: n.owned for n in loads if n.node_id != me}
    by_id = {n.node_id: n for n in loads if n.node_id != me}
    targets: list[NodeLoad] = []
    for _ in range(count):
        open_ = [i for i in given if given[i] < ceiling(by_id[i])]
        if not open_:
            break
        pick = min(open_, key=lambda i: (given[i], i))
        given[pick] += 1
        targets.append(by_id[pick])
    return targets
