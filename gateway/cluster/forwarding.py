"""Any node serves any call: a call bound to an instance another node owns is re-issued on
that owner, and its answer relayed unchanged (the response or stream, the status code,
message and `google.rpc` details).

Installed in cluster mode only, as the innermost wrapper of every handler (inside the call
guard, which has authenticated the caller and checked its access). For a call in
owner_bound.OWNER_BOUND it asks first whether another node holds the instance (no query when
this node does), so such a call is forwarded before its handler did anything. A handler
that meets `InstanceOnAnotherNode` itself (the owner took the instance meanwhile) is
forwarded too, as long as it has not answered anything yet (a stream: no item yet).

The forwarded call carries the caller's own API key, which the owner checks again against
the shared store (tenancy and roles hold there as here), and a node proof
(node_proof.py): the owner never forwards it again."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NoReturn, cast

import grpc
import grpc.aio
from google.protobuf import descriptor_pool, message_factory

from zapgate.gateway.cluster.node import ClusterNode
from zapgate.gateway.cluster.node_channels import NodeChannels
from zapgate.gateway.cluster.node_proof import NodeProof
from zapgate.gateway.cluster.owner_bound import OWNER_BOUND
from zapgate.gateway.config import TlsConfig
from zapgate.gateway.rpc.access import PACKAGE, named_instance
from zapgate.gateway.rpc.call_guard import STATUS_DETAILS_KEY
from zapgate.gateway.rpc.errors import InstanceOnAnotherNode
from zapgate.gateway.rpc.handlers import Handler
from zapgate.gateway.rpc.tenancy import current_tenant
from zapgate.gateway.store.fencing import Fencing

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
# Only the caller's credentials travel; the owner learns the rest from the request.
FORWARDED_HEADERS = ("authorization",)


class Forwarder:
    def __init__(
        self, node_id: str, fencing: Fencing, proof: NodeProof, channels: NodeChannels
    ) -> None:
        # Read by each method's _Route.
        self.node_id = node_id
        self.fencing = fencing
        self.proof = proof
        self.channels = channels

    def wrap(self, method: str, handler: Handler) -> Handler:
        if not method.startswith(f"/{PACKAGE}."):
            return handler  # health, reflection
        route = _Route(self, method, method.removeprefix(f"/{PACKAGE}.") in OWNER_BOUND)
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(route.unary(handler.unary_unary), **codecs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                route.stream(handler.unary_stream), **codecs
            )
        return handler  # no public call streams requests

    async def close(self) -> None:
        await self.channels.close()


def forwarder_of(node: ClusterNode, tls: TlsConfig | None) -> Forwarder:
    settings = node.settings
    return Forwarder(
        settings.node_id, node.ownership, NodeProof(settings.secret), NodeChannels(tls)
    )


class _Route:
    """One method: whether it belongs on the owner, and how to call it there."""

    def __init__(self, forwarder: Forwarder, method: str, owner_bound: bool) -> None:
        self.forwarder = forwarder
        self.method = method
        self.owner_bound = owner_bound
        service, _, name = method.removeprefix("/").partition("/")
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
        self.response: Any = message_factory.GetMessageClass(found.output_type)

    def _forwarded(self, context: Context) -> bool:
        """True when another node forwarded the call here: it is never forwarded again.
        Raises Unauthenticated for a call that claims so without a valid proof."""
        metadata = context.invocation_metadata()
        return bool(self.forwarder.proof.forwarded_by(metadata, self.method))

    async def _check_owner(self, request: Any) -> None:
        """Raises InstanceOnAnotherNode for an owner-bound call of an instance another node
        holds (a call forwarded here that moved on meanwhile too: answered UNAVAILABLE)."""
        if self.owner_bound and (instance_id := named_instance(request)):
            await self.forwarder.fencing.refuse_other_owner(current_tenant(), instance_id)

    def unary(self, inner: Any) -> Callable[[Any, Context], Any]:
        async def serve(request: Any, context: Context) -> Any:
            forwarded = self._forwarded(context)
            try:
                await self._check_owner(request)
                return await inner(request, context)
            except InstanceOnAnotherNode as moved:
                if forwarded:
                    raise
                return await self._forward_unary(request, context, moved)

        return serve

    def stream(self, inner: Any) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
            forwarded = self._forwarded(context)
            answered = False
            try:
                await self._check_owner(request)
                async for item in inner(request, context):
                    answered = True
                    yield item
            except InstanceOnAnotherNode as moved:
                if forwarded or answered:
                    raise
                async for item in self._forward_stream(request, context, moved):
                    yield item

        return serve

    # ---- on the owner -------------------------------------------------------------------

    def _call_options(self, context: Context, moved: InstanceOnAnotherNode) -> dict[str, Any]:
        headers = [
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if key in FORWARDED_HEADERS
        ]
        headers += self.forwarder.proof.headers(self.forwarder.node_id, self.method)
        remaining = getattr(context, "time_remaining", lambda: None)()
        log.debug("forwarding %s to node %s", self.method, moved.metadata.get("owner_node"))
        return {"metadata": tuple(headers), "timeout": remaining}

    def _channel(self, moved: InstanceOnAnotherNode) -> grpc.aio.Channel:
        return self.forwarder.channels.to(moved.metadata["owner_address"])

    async def _forward_unary(
        self, request: Any, context: Context, moved: InstanceOnAnotherNode
    ) -> Any:
        call = self._channel(moved).unary_unary(
            self.method,
            request_serializer=_serialize,
            response_deserializer=self.response.FromString,
        )
        try:
            return await call(request, **self._call_options(context, moved))
        except grpc.aio.AioRpcError as error:
            await _relay(context, error, moved)

    async def _forward_stream(
        self, request: Any, context: Context, moved: InstanceOnAnotherNode
    ) -> AsyncIterator[Any]:
        call = self._channel(moved).unary_stream(
            self.method,
            request_serializer=_serialize,
            response_deserializer=self.response.FromString,
        )(request, **self._call_options(context, moved))
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as error:
            await _relay(context, error, moved)
        finally:
            call.cancel()  # the caller went away: so does the call on the owner


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


async def _relay(
    context: Context, error: grpc.aio.AioRpcError, moved: InstanceOnAnotherNode
) -> NoReturn:
    """Ends the call with the owner's status. An owner that cannot be reached (it died, its
    lease not expired yet) gets the answer a non-owner gave before forwarding existed:
    UNAVAILABLE naming the owner; the client retries, by then on the new owner."""
    # grpc.aio's Metadata iterates as (key, value) pairs; the stubs type it otherwise.
    received = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    trailing = tuple(
        (key, value)
        for key, value in received
        if not key.startswith(("grpc-", ":")) or key == STATUS_DETAILS_KEY
    )
    if error.code() == grpc.StatusCode.UNAVAILABLE and not any(
        key == STATUS_DETAILS_KEY for key, _ in trailing
    ):
        log.warning(
            "owner node %s unreachable: %s", moved.metadata.get("owner_node"), error.details()
        )
        raise moved from None
    await context.abort(error.code(), error.details() or "", trailing_metadata=trailing)
    raise AssertionError("abort returned")  # pragma: no cover
