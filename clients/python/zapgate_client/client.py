"""`Client`: one gRPC channel to a zapgate server, typed stubs and a few helpers."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from zapgate_client.retry import Retry
from zapgate_client.v1 import (
    chat_pb2_grpc,
    contact_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    group_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    key_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    webhook_pb2_grpc,
)

if TYPE_CHECKING:  # generic only in the type stubs
    UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    UnaryStreamInterceptor = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor
    UnaryStreamInterceptor = grpc.aio.UnaryStreamClientInterceptor

log = logging.getLogger("zapgate_client")
DEFAULT_RETRY = Retry()


@dataclass(frozen=True)
class Tls:
    """TLS settings: `ca` is the PEM roots to trust (None: the system's); `cert` and `key`
    are a client certificate for servers that require one (mutual TLS)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_files(
        cls, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
    ) -> Tls:
        return cls(*(path.read_bytes() if path else None for path in (ca, cert, key)))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


class Client:
    """An async client of one zapgate server.

    The API key goes on every call; calls that fail with UNAVAILABLE are retried with backoff
    (see `Retry`). The typed stubs `instances`, `messages`, `events`, `contacts`,
    `simulator`, `webhooks`, `groups` and `keys` reach every RPC; the helpers below cover
    the common flows. Use it as an async context manager, or call `close()`.
    """

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        tls: Tls | bool = False,
        retry: Retry | None = DEFAULT_RETRY,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.retry = retry or Retry(attempts=1)  # no retries; still the subscription's backoff
        channel_options = [*self.retry.channel_options(), *options]
        interceptors: list[Any] = [_ApiKeyUnary(api_key), _ApiKeyStream(api_key)] if api_key else []
        if tls:
            credentials = (tls if isinstance(tls, Tls) else Tls()).credentials()
            self.channel = grpc.aio.secure_channel(
                target, credentials, channel_options, interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.insecure_channel(
                target, channel_options, interceptors=interceptors
            )
        self.instances = instance_pb2_grpc.InstanceServiceStub(self.channel)
        self.messages = message_pb2_grpc.MessageServiceStub(self.channel)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)
        self.contacts = contact_pb2_grpc.ContactServiceStub(self.channel)
        self.simulator = simulator_pb2_grpc.SimulatorServiceStub(self.channel)
        self.webhooks = webhook_pb2_grpc.WebhookServiceStub(self.channel)
        self.groups = group_pb2_grpc.GroupServiceStub(self.channel)
        self.keys = key_pb2_grpc.KeyServiceStub(self.channel)
        self.chats = chat_pb2_grpc.ChatServiceStub(self.channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close(None)

    async def health(self, timeout: float | None = None) -> str:  # noqa: ASYNC109 (a deadline)
        """The server's standard health status: "SERVING", "NOT_SERVING", ... (no key needed)."""
        reply = await health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def list_instances(
        self, state: instance_pb2.InstanceState.ValueType = instance_pb2.INSTANCE_STATE_UNSPECIFIED
    ) -> AsyncGenerator[instance_pb2.Instance, None]:
        """Every instance of the caller's tenant (optionally in one state), page by page."""
        request = instance_pb2.ListInstancesRequest(state=state)
        while True:
            page = await self.instances.ListInstances(request)
            for instance in page.instances:
                yield instance
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def connect(
        self, instance_id: str, phone: str = ""
    ) -> AsyncGenerator[instance_pb2.ConnectResponse, None]:
        """Connects an instance and yields its QR codes, pair code (with `phone`) and state
        changes, then the final `result`. Leaving the loop early stops watching."""
        call = self.instances.Connect(
            instance_pb2.ConnectRequest(instance_id=instance_id, phone=phone)
        )
        try:
            async for update in call:
                yield update
        finally:
            call.cancel()

    async def pair_simulated(self, instance_id: str, phone: str) -> instance_pb2.ConnectResult:
        """With `zapgate serve --engine sim`: connects, scans the first QR code as the
        simulated phone `phone` (E.164) and returns the final result."""
        async for update in self.connect(instance_id):
            if update.HasField("qr_code"):
                request = simulator_pb2.ScanQrRequest(
                    instance_id=instance_id, code=update.qr_code.code, phone=phone
                )
                await self.simulator.ScanQr(request)
            elif update.HasField("result"):
                return update.result
        raise ConnectionError(f"Connect of {instance_id} ended without a result")

    async def send_text(
        self,
        instance_id: str,
        to: str,
        body: str,
        *,
        variables: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        reply_to: str = "",
        mentions: Sequence[str] = (),
    ) -> message_pb2.Message:
        """Queues a text to `to` (E.164 phone, or a JID with "@"). `body` may use `{name}`
        variables and `{Hi|Hello}` spins. A random idempotency key is used when none is given,
        so a retried call never sends twice. `reply_to` quotes a message of the chat (a
        received message's id, or one of the instance's own messages); each E.164 number in
        `mentions` must appear in `body` as @<digits>."""
        request = message_pb2.SendMessageRequest(
            instance_id=instance_id,
            text=message_pb2.Text(body=body),
            variables=variables,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            reply_to=reply_to,
            mentions=list(mentions),
        )
        if "@" in to:
            request.jid = to
        else:
            request.phone = to
        return (await self.messages.SendMessage(request)).message

    async def reply(
        self, instance_id: str, message_id: str, to: str, body: str, **options: Any
    ) -> message_pb2.Message:
        """Queues a text that quotes `message_id` (send_text with reply_to)."""
        return await self.send_text(instance_id, to, body, reply_to=message_id, **options)

    async def react(
        self, instance_id: str, message_id: str, emoji: str, *, idempotency_key: str | None = None
    ) -> message_pb2.Message:
        """Queues a reaction to a message of one of the instance's chats; an empty emoji
        removes the instance's reaction."""
        request = message_pb2.ReactRequest(
            instance_id=instance_id,
            message_id=message_id,
            emoji=emoji,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        return (await self.messages.React(request)).message

    async def mark_read(
        self, instance_id: str, message_ids: Sequence[str] = (), *, up_to: str = ""
    ) -> int:
        """Sends read receipts for received messages of one chat: `message_ids`, or (with
        `up_to`) every message of that message's chat up to it. Returns how many were marked."""
        request = message_pb2.MarkReadRequest(
            instance_id=instance_id, message_ids=list(message_ids), up_to_message_id=up_to
        )
        return (await self.messages.MarkRead(request)).marked

    async def subscribe(
        self,
        from_cursor: int = 0,
        *,
        only_new: bool = False,
        instance_ids: Iterable[str] = (),
        types: Iterable[event_pb2.EventType.ValueType] = (),
    ) -> AsyncGenerator[event_pb2.Event, None]:
        """The tenant's events after `from_cursor` (0: the oldest kept; `only_new`: none of
        the past), then live, for as long as it is iterated.

        When the stream breaks (UNAVAILABLE, or the server stopping) it subscribes again after
        the last event it yielded, with backoff: nothing is lost or repeated. Other errors are
        raised, e.g. OUT_OF_RANGE when the cursor is older than the server's event log.
        Persist `event.cursor` to resume from there after your own restart.
        """
        request = event_pb2.SubscribeRequest(
            from_cursor=from_cursor, only_new=only_new, instance_ids=instance_ids, types=types
        )
        failures = 0
        while True:
            call = self.events.Subscribe(request)
            try:
                async for reply in call:
                    failures = 0
                    request.from_cursor, request.only_new = reply.event.cursor, False
                    yield reply.event
                log.info("event stream ended; resuming after cursor %d", request.from_cursor)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                log.info("event stream unavailable (%s); resuming", error.details())
            finally:
                call.cancel()
            await asyncio.sleep(self.retry.delay(failures))
            failures += 1


class _ApiKey:
    """Adds `authorization: Bearer <key>` to a call. gRPC takes an interceptor for one kind of
    call only, hence one subclass per kind zapgate has."""

    def __init__(self, api_key: str) -> None:
        self._header = ("authorization", f"Bearer {api_key}")

    def _with_key(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _ApiKeyUnary(_ApiKey, UnaryUnaryInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_key(client_call_details), request)


class _ApiKeyStream(_ApiKey, UnaryStreamInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_key(client_call_details), request)
