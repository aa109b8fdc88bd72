"""The node proof a forwarded call carries (gateway/cluster/node_proof.py): accepted only
with the cluster's secret, for the method it was made for, within the clock skew allowed."""

from __future__ import annotations

import pytest

from zapgate.gateway.cluster.node_proof import FORWARDED_BY, MAX_SKEW_SECONDS, NODE_PROOF, NodeProof
from zapgate.gateway.rpc.errors import Unauthenticated

SECRET = "a-cluster-secret-for-tests"
METHOD = "/zapgate.v1.MessageService/SendMessage"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_call_from_a_client_is_no_forwarded_call() -> None:
    proof = NodeProof(SECRET)
    assert proof.forwarded_by([("authorization", "Bearer x")], METHOD) == ""
    assert proof.forwarded_by(None, METHOD) == ""


def test_a_proof_made_with_the_secret_names_its_node() -> None:
    clock = Clock()
    headers = NodeProof(SECRET, clock).headers("node-a", METHOD)
    assert dict(headers).keys() == {FORWARDED_BY, NODE_PROOF}
    clock.now += MAX_SKEW_SECONDS  # still within the skew allowed
    assert NodeProof(SECRET, clock).forwarded_by(headers, METHOD) == "node-a"


@pytest.mark.parametrize(
    "tamper",
    [
        "another secret",
        "another method",
        "another node",
        "too old",
        "from the future",
        "no proof",
        "no node",
        "malformed",
    ],
)
def test_every_other_proof_is_unauthenticated(tamper: str) -> None:
    clock = Clock()
    made_with = "another-secret-entirely" if tamper == "another secret" else SECRET
    headers = dict(NodeProof(made_with, clock).headers("node-a", METHOD))
    method = METHOD
    if tamper == "another method":
        method = "/zapgate.v1.InstanceService/Logout"
    elif tamper == "another node":
        headers[FORWARDED_BY] = "node-b"
    elif tamper == "too old":
        clock.now += MAX_SKEW_SECONDS + 1
    elif tamper == "from the future":
        clock.now -= MAX_SKEW_SECONDS + 1
    elif tamper == "no proof":
        del headers[NODE_PROOF]
    elif tamper == "no node":
        del headers[FORWARDED_BY]
    elif tamper == "malformed":
        headers[NODE_PROOF] = "v1,yesterday,abc"
    with pytest.raises(Unauthenticated):
        NodeProof(SECRET, clock).forwarded_by(list(headers.items()), method)
