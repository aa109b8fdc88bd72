"""The proof that a call comes from another node of the cluster: the forwarding node signs
(its id, the method, the time) with the cluster secret every node shares. A call marked as
forwarded must carry a valid proof (UNAUTHENTICATED otherwise), and is never forwarded
again: a lease that moved while the call travelled answers UNAVAILABLE, no ping-pong.
The proof grants nothing else: the caller's API key is checked again on the owner."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable

from zapgate.gateway.rpc.errors import Unauthenticated

FORWARDED_BY = "zapgate-forwarded-by"
NODE_PROOF = "zapgate-node-proof"
# Nodes' clocks need only roughly agree (NTP): a proof is accepted this far either way.
MAX_SKEW_SECONDS = 300
VERSION = "v1"


class NodeProof:
    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._key = secret.encode()
        self._clock = clock

    def headers(self, node_id: str, method: str) -> tuple[tuple[str, str], ...]:
        stamp = str(int(self._clock()))
        return (
            (FORWARDED_BY, node_id),
            (NODE_PROOF, f"{VERSION},{stamp},{self._sign(stamp, node_id, method)}"),
        )

    def forwarded_by(self, metadata: Iterable[tuple[str, str | bytes]] | None, method: str) -> str:
        """The node a forwarded call comes from ("" for a call from a client); raises
        Unauthenticated when the call claims to be forwarded without a valid proof."""
        found = {key: value for key, value in metadata or () if key in (FORWARDED_BY, NODE_PROOF)}
        node_id, proof = found.get(FORWARDED_BY), found.get(NODE_PROOF)
        if node_id is None and proof is None:
            return ""
        if not isinstance(node_id, str) or not isinstance(proof, str):
            raise Unauthenticated("a forwarded call needs both zapgate-forwarded-by and a proof")
        version, _, rest = proof.partition(",")
        stamp, _, signature = rest.partition(",")
        if version != VERSION or not stamp.isdigit():
            raise Unauthenticated("malformed node proof")
        if abs(self._clock() - int(stamp)) > MAX_SKEW_SECONDS:
            raise Unauthenticated("node proof too old (or the nodes' clocks disagree)")
        if not hmac.compare_digest(signature, self._sign(stamp, node_id, method)):
            raise Unauthenticated("node proof does not match this cluster's secret")
        return node_id

    def _sign(self, stamp: str, node_id: str, method: str) -> str:
        message = f"{stamp}\n{node_id}\n{method}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
