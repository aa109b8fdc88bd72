"""The engine boundary's one vocabulary of failures. Engines raise these inside a worker;
the worker carries the kind over the wire as `zapgate.engine.v1.EngineErrorKind`; the pool
raises the same types in the core. Whoever catches them decides by type, never by text:

- NotRunning, NotConnected: nothing reached WhatsApp; the call may be retried later (a
  message goes back to its queue and counts as no failure).
- Rejected: the simulated phone refused the action (a wrong or expired code).
- NotAdmin, GroupNotFound: a group change needs an admin, or names a group the account is
  not in (or an invite that leads nowhere).
- SendRefused: WhatsApp (or the engine) refused this one message; `code` says why.
- MaybeSent: the message was handed to WhatsApp but no answer came: it may have gone out.
- WorkerUnavailable: the worker hosting the instance is down or restarting. `in_flight`
  tells whether the call had reached the worker (then a send may have gone out).
- EngineError itself: any other failure of the engine."""

from __future__ import annotations

from zapgate.engine.v1 import worker_pb2 as pb


class EngineError(Exception):
    """An engine call failed; the message says why in words an operator can act on."""

    kind: pb.EngineErrorKind.ValueType = pb.ENGINE_ERROR_KIND_FAILED


class NotRunning(EngineError):
    """The instance is not running in this engine (or not in the phase the call needs)."""

    kind = pb.ENGINE_ERROR_KIND_NOT_RUNNING


class NotConnected(EngineError):
    """The instance runs but is not connected to WhatsApp (yet, or any more)."""

    kind = pb.ENGINE_ERROR_KIND_NOT_CONNECTED


class Rejected(EngineError):
    """The simulated phone refused the action (a wrong or expired code, ...)."""

    kind = pb.ENGINE_ERROR_KIND_REJECTED


class SendRefused(EngineError):
    """WhatsApp (or the engine) refused one message; the instance is fine. `code`:
    "not_on_whatsapp", "463" (WhatsApp's anti-spam refusal), "media_upload_failed",
    "invalid_recipient", "invalid_content", ... ."""

    kind = pb.ENGINE_ERROR_KIND_REFUSED

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class MaybeSent(EngineError):
    """The message was handed to WhatsApp and no answer came: it may have been delivered."""

    kind = pb.ENGINE_ERROR_KIND_MAYBE_SENT


class NotAdmin(EngineError):
    """The account is not an admin of the group, and the change needs one."""

    kind = pb.ENGINE_ERROR_KIND_NOT_ADMIN


class GroupNotFound(EngineError):
    """The account is not in the group, or the group (or the invite link) does not exist."""

    kind = pb.ENGINE_ERROR_KIND_GROUP_NOT_FOUND


class WorkerUnavailable(EngineError):
    """The worker hosting the instance is down or restarting; retry later."""

    kind = pb.ENGINE_ERROR_KIND_WORKER_UNAVAILABLE

    def __init__(self, message: str, *, in_flight: bool = False) -> None:
        super().__init__(message)
        self.in_flight = in_flight


_BY_KIND: dict[int, type[EngineError]] = {
    cls.kind: cls
    for cls in (EngineError, NotRunning, NotConnected, Rejected, MaybeSent, NotAdmin, GroupNotFound)
}


def to_wire(error: EngineError) -> pb.EngineErrorDetail:
    return pb.EngineErrorDetail(
        kind=error.kind,
        message=str(error),
        refusal_code=error.code if isinstance(error, SendRefused) else "",
    )


def from_wire(detail: pb.EngineErrorDetail) -> EngineError:
    if detail.kind == pb.ENGINE_ERROR_KIND_REFUSED:
        return SendRefused(detail.refusal_code, detail.message)
    return _BY_KIND.get(detail.kind, EngineError)(detail.message)
