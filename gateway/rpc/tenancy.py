"""The tenant of the call being served: set by the call guard once the call's API key is
checked, read by services (and by log lines) anywhere inside the call."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar, Token

_tenant: ContextVar[str] = ContextVar("zapgate_tenant")


def current_tenant() -> str:
    """The tenant of the API key of the call being served (LookupError outside a call)."""
    return _tenant.get()


def enter_tenant(tenant: str) -> Token[str]:
    return _tenant.set(tenant)


def leave_tenant(token: Token[str]) -> None:
    # A server stream the client cancelled is closed by asyncio's generator finalizer, in
    # another context: there the token cannot be reset, and the call's context is gone.
    with contextlib.suppress(ValueError):
        _tenant.reset(token)
