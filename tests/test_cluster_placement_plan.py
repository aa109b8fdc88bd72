"""Where instances go in a cluster, from the live nodes' loads (gateway/cluster/placement.py):
new ones to the least loaded node, a joining node's fair share from the nodes above it a
batch at a time, a stopping node's instances to the others within their room."""

from __future__ import annotations

from zapgate.gateway.cluster.placement import drain, fair_share, least_loaded, rebalance
from zapgate.gateway.store.leases import NodeLoad


def load(node_id: str, owned: int, max_instances: int = 100) -> NodeLoad:
    return NodeLoad(node_id, f"{node_id}:1", owned, max_instances)


def ids(targets: list[NodeLoad]) -> list[str]:
    return [t.node_id for t in targets]


def test_a_new_instance_stays_on_the_asking_node_unless_another_is_less_loaded() -> None:
    loads = [load("a", 3), load("b", 3), load("c", 1)]
    target = least_loaded(loads, "a", 3)
    assert target is not None
    assert target.node_id == "c"
    assert least_loaded(loads, "c", 1) is None  # it is the least loaded
    assert least_loaded([load("a", 2), load("b", 2)], "a", 2) is None  # a tie stays here
    assert least_loaded([load("a", 5), load("b", 1, max_instances=1)], "a", 5) is None  # full
    assert least_loaded([load("a", 5)], "a", 5) is None  # alone


def test_a_joining_node_gets_the_fair_share_from_the_busier_ones_a_batch_at_a_time() -> None:
    loads = [load("a", 10), load("b", 0)]
    assert fair_share(loads, "a", 10) == 5
    assert ids(rebalance(loads, "a", 10, batch=3)) == ["b", "b", "b"]  # paced
    assert ids(rebalance(loads, "a", 10, batch=100)) == ["b"] * 5  # never beyond the share
    assert rebalance(loads, "b", 0, batch=3) == []  # below the share: gives nothing
    # The nodes above the share give, to the nodes below it, least loaded first.
    three = [load("a", 7), load("b", 5), load("c", 0)]
    assert fair_share(three, "a", 7) == 4
    assert ids(rebalance(three, "a", 7, batch=10)) == ["c", "c", "c"]
    assert ids(rebalance(three, "b", 5, batch=10)) == ["c"]
    # Balanced within one (rounded up): nothing moves, so nothing ping-pongs.
    assert rebalance([load("a", 4), load("b", 3), load("c", 3)], "a", 4, batch=10) == []


def test_a_joining_node_never_gets_beyond_its_maximum() -> None:
    loads = [load("a", 10), load("b", 0, max_instances=2)]
    assert ids(rebalance(loads, "a", 10, batch=10)) == ["b", "b"]


def test_a_stopping_node_gives_everything_within_the_others_room() -> None:
    loads = [load("a", 6, max_instances=0), load("b", 4), load("c", 1, max_instances=3)]
    assert ids(drain(loads, "a", 6)) == ["c", "c", "b", "b", "b", "b"]
    assert ids(drain(loads, "a", 2)) == ["c", "c"]
    assert drain([load("a", 6)], "a", 6) == []  # nobody else: it stops as usual


def test_a_draining_node_counts_in_no_fair_share() -> None:
    # "d" drains (its maximum is 0): its 6 instances count, it does not.
    loads = [load("a", 6), load("d", 6, max_instances=0), load("n", 0)]
    assert fair_share(loads, "a", 6) == 6  # 12 over a and n
    assert rebalance(loads, "a", 6, batch=10) == []  # n fills from d's drain instead
    assert ids(drain(loads, "d", 6)) == ["n"] * 6
    assert least_loaded(loads, "a", 6) is not None
    assert least_loaded(loads, "a", 6).node_id == "n"  # type: ignore[union-attr]
