"""One error root for zapgate, mapped once to a gRPC status with `google.rpc` details."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import sqlalchemy.exc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from zapgate.gateway.store.conflicts import CONFLICTS, conflict_of
from zapgate.sessions import errors as engine_errors
from zapgate.sessions.errors import (
    EngineError,
    NotConnected,
    NotRunning,
    Rejected,
    WorkerUnavailable,
)
from zapgate.v1 import errors_pb2

ERROR_DOMAIN = "zapgate.v1"
# Errors echo client input (ids, label keys). gRPC refuses trailers over 16 KiB: the client
# would get RESOURCE_EXHAUSTED with no details at all. So every echoed string is clipped, and
# at most MAX_VIOLATIONS field violations are named.
MAX_ECHO_CHARS = 100
MAX_MESSAGE_CHARS = 1000
MAX_VIOLATIONS = 20


def clip(text: str) -> str:
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "…"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ZapgateError(Exception):
    """Base of every error a client may see. Subclasses fix the code and the stable reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: errors_pb2.ErrorReason.ValueType = errors_pb2.ERROR_REASON_INTERNAL

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        message = message[:MAX_MESSAGE_CHARS]
        super().__init__(message)
        self.message = message
        self.metadata = {k: clip(v) for k, v in (metadata or {}).items()}

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason=errors_pb2.ErrorReason.Name(self.reason).removeprefix("ERROR_REASON_"),
            domain=ERROR_DOMAIN,
            metadata=self.metadata,
        )
        return [_pack(info)]

    def to_status(self) -> status_pb2.Status:
        code = getattr(code_pb2, self.code.name)
        return status_pb2.Status(code=code, message=self.message, details=self.details())


class InvalidArgument(ZapgateError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = errors_pb2.ERROR_REASON_INVALID_ARGUMENT

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(
            FieldViolation(clip(v.field), clip(v.description)) for v in violations[:MAX_VIOLATIONS]
        )
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {summary}")

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [*super().details(), _pack(bad_request)]


class Unauthenticated(ZapgateError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = errors_pb2.ERROR_REASON_UNAUTHENTICATED


class InstanceNotFound(ZapgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = errors_pb2.ERROR_REASON_INSTANCE_NOT_FOUND

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"instance {instance_id!r} not found", metadata={"instance_id": instance_id}
        )


class InstanceAlreadyExists(ZapgateError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = errors_pb2.ERROR_REASON_INSTANCE_ALREADY_EXISTS

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"instance {instance_id!r} already exists with different fields",
            metadata={"instance_id": instance_id},
        )


class InstanceNotRunning(ZapgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_INSTANCE_NOT_RUNNING


class InstanceNotConnected(ZapgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_INSTANCE_NOT_CONNECTED


class InstanceNotPaired(ZapgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_INSTANCE_NOT_PAIRED


class InstanceBanned(ZapgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_INSTANCE_BANNED


class SimulationRejected(ZapgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_SIMULATION_REJECTED


class SimulatorDisabled(ZapgateError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = errors_pb2.ERROR_REASON_SIMULATOR_DISABLED

    def __init__(self) -> None:
        super().__init__("SimulatorService is served only when zapgate runs with `--engine sim`")


class EngineUnavailable(ZapgateError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = errors_pb2.ERROR_REASON_ENGINE_UNAVAILABLE


class MessageNotFound(ZapgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = errors_pb2.ERROR_REASON_MESSAGE_NOT_FOUND

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message {message_id!r} not found", metadata={"message_id": message_id})


class MediaNotFound(ZapgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = errors_pb2.ERROR_REASON_MEDIA_NOT_FOUND

    def __init__(self, message_id: str) -> None:
        super().__init__(
            f"message {message_id!r} has no received media", metadata={"message_id": message_id}
        )


class EngineFailed(ZapgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_ENGINE_FAILED


class MessageNotCancellable(ZapgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_MESSAGE_NOT_CANCELLABLE

    def __init__(self, message_id: str, state: str) -> None:
        super().__init__(
            f"message {message_id!r} is {state}: only QUEUED messages can be cancelled",
            metadata={"message_id": message_id, "state": state},
        )


class MessageNotActionable(ZapgateError):
    """`why` is stable: not_sent, not_own, not_text, edit_window_passed,
    revoke_window_passed, not_quotable."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = errors_pb2.ERROR_REASON_MESSAGE_NOT_ACTIONABLE

    def __init__(self, message_id: str, why: str, description: str) -> None:
        super().__init__(
            f"message {message_id!r}: {description}",
            metadata={"message_id": message_id, "why": why},
        )


class RateLimited(ZapgateError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = errors_pb2.ERROR_REASON_RATE_LIMITED

    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(
            f"too many {what} calls for this instance; retry in {retry_after:.1f} s",
            metadata={"what": what, "retry_after_seconds": f"{retry_after:.3f}"},
        )
        self.retry_after = retry_after

    def details(self) -> list[any_pb2.Any]:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(round(self.retry_after * 1e9))
        return [*super().details(), _pack(retry)]


class GroupNotAdmin(ZapgateError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = errors_pb2.ERROR_REASON_GROUP_NOT_ADMIN


class GroupNotFound(ZapgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = errors_pb2.ERROR_REASON_GROUP_NOT_FOUND


class ChatNotFound(ZapgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = errors_pb2.ERROR_REASON_CHAT_NOT_FOUND

    def __init__(self, chat_jid: str) -> None:
        super().__init__(f"chat {chat_jid!r} not found", metadata={"chat_jid": chat_jid})


class WebhookNotFound(ZapgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = errors_pb2.ERROR_REASON_WEBHOOK_NOT_FOUND

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"webhook {webhook_id!r} not found", metadata={"webhook_id": webhook_id})


class PermissionDenied(ZapgateError):
    """The call's API key may not make this call (never said of an instance it cannot see:
    that one is InstanceNotFound)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = errors_pb2.ERROR_REASON_PERMISSION_DENIED


class KeyNotFound(ZapgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = errors_pb2.ERROR_REASON_KEY_NOT_FOUND

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} not found", metadata={"key_id": key_id})


class CursorExpired(ZapgateError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = errors_pb2.ERROR_REASON_CURSOR_EXPIRED

    def __init__(self, cursor: int, oldest: int) -> None:
        super().__init__(
            f"cursor {cursor} is older than the retained events; the oldest is {oldest}",
            metadata={"cursor": str(cursor), "oldest_cursor": str(oldest)},
        )


class Unavailable(ZapgateError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = errors_pb2.ERROR_REASON_UNAVAILABLE


def from_engine(error: EngineError) -> ZapgateError:
    """An engine's failure (sessions/errors.py) as the error a client sees."""
    message = str(error)
    match error:
        case NotRunning():
            return InstanceNotRunning(message)
        case NotConnected():
            return InstanceNotConnected(message)
        case Rejected():
            return SimulationRejected(message)
        case WorkerUnavailable():
            return EngineUnavailable(message)
        case engine_errors.NotAdmin():
            return GroupNotAdmin(message)
        case engine_errors.GroupNotFound():
            return GroupNotFound(message)
        case _:
            return EngineFailed(message)


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout


def from_busy_store(error: Exception) -> Unavailable | None:
    """The state store too busy to answer in time (SQLite's write lock held past its busy
    timeout, a PostgreSQL lock waited for past lock_timeout, every pooled connection taken
    past the pool's timeout), or PostgreSQL aborting the transaction in a conflict with
    another (a deadlock, a serialization failure) that its retries (store/conflicts.py) did
    not get past: nothing was committed, so the caller may retry. Any other error is not
    this one (None)."""
    cause = error.orig if isinstance(error, sqlalchemy.exc.DBAPIError) else error
    locked = isinstance(cause, sqlite3.OperationalError) and "database is locked" in str(cause)
    # PostgreSQL's lock_timeout (cluster nodes set it: store/db.py): the lock waited too long.
    locked = locked or getattr(cause, "sqlstate", None) == LOCK_NOT_AVAILABLE
    if locked or isinstance(error, sqlalchemy.exc.TimeoutError):
        return Unavailable("the state store is busy; retry (with the same idempotency key)")
    if (state := conflict_of(error)) is not None:
        return Unavailable(
            f"the state store aborted the call's transaction ({CONFLICTS[state]}, SQLSTATE "
            f"{state}) in a conflict with another; retry (with the same idempotency key)",
            metadata={"sqlstate": state},
        )
    return None


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InstanceOnAnotherNode(Unavailable):
    """Cluster mode: another node owns the instance. The forwarder (gateway/cluster/
    forwarding.py) catches it and re-issues the call on the owner; a client sees it only
    when the call was already forwarded once, or the owner cannot be reached."""

    def __init__(self, instance_id: str, owner_node: str, owner_address: str) -> None:
        super().__init__(
            f"instance {instance_id!r} is served by node {owner_node} ({owner_address}): "
            "call that node",
            metadata={
                "instance_id": instance_id,
                "owner_node": owner_node,
                "owner_address": owner_address,
            },
        )
