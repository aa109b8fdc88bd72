"""The caller of the call being served (its API key's tenant, role and instance scope): set
by the call guard once the key is checked, read by services (and by log lines) anywhere
inside the call."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextvars import ContextVar, Token

from zapgate.gateway.rpc.roles import Caller

_caller: ContextVar[Caller] = ContextVar("zapgate_caller")


def current_tenant() -> str:
    """The tenant of the API key of the call being served (LookupError outside a call)."""
    return _caller.get().tenant


def current_caller() -> Caller:
    """The API key of the call being served (LookupError outside a call)."""
    return _caller.get()


def visible_instances(requested: Sequence[str] = ()) -> list[str] | None:
    """For a tenant-wide listing filtered to `requested` ids (empty: all): the ids it may
    show, [] meaning all of the tenant's, or None when nothing at all is visible. An
    unscoped key sees what it asked for; a scoped one only its scope, so an id outside it
    filters like an id that does not exist."""
    scope = _caller.get().scope
    if not scope:
        return list(requested)
    if not requested:
        return list(scope)
    visible = [i for i in requested if i in scope]
    return visible or None


def enter_caller(caller: Caller) -> Token[Caller]:
    return _caller.set(caller)


def leave_caller(token: Token[Caller]) -> None:
    # A server stream the client cancelled is closed by asyncio's generator finalizer, in
    # another context: there the token cannot be reset, and the call's context is gone.
    with contextlib.suppress(ValueError):
        _caller.reset(token)
