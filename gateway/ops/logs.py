"""Logging of `zapgate serve`: text (default) or one JSON object per line, with the tenant and
instance id on every line that concerns an instance, and no secret in any line.

Which instance a line concerns is kept in a context variable (like the tenant of the call
being served, see call_guard.py), set where work on one instance begins: a gRPC call naming
an instance (call_guard.py), an engine event, a worker's death, a send. asyncio copies
context variables into every task and timer started from there, so background work started
on behalf of an instance (retries, snapshots, receipts) carries it too. A log call may also
pass `extra=instance_fields(tenant, instance_id)`.

Secrets never reach the log because nothing logs them: API keys (only key ids), the master
key (only fingerprints), session stores (only sizes), message texts and QR codes. Libraries
that would (SQLAlchemy and aiosqlite log every statement with its parameters at INFO/DEBUG)
are held at WARNING, and any `zg_<id>_<secret>` API key that still reached a line (in an
exception message, say) is masked. The line formats themselves are shared with the engine
workers (sessions/log_lines.py)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TextIO

from zapgate.gateway.rpc.tenancy import current_tenant
from zapgate.sessions.log_lines import formatter_for, install

_instance: ContextVar[tuple[str, str] | None] = ContextVar("zapgate_log_instance", default=None)
InstanceToken = Token[tuple[str, str] | None]


def instance_fields(tenant: str, instance_id: str) -> dict[str, str]:
    """`extra=` for a log call about one instance, outside any `about_instance` scope."""
    return {"tenant": tenant, "instance_id": instance_id}


@contextmanager
def about_instance(tenant: str, instance_id: str) -> Iterator[None]:
    """Lines logged inside (and in tasks started inside) concern this instance."""
    token = enter_instance(tenant, instance_id)
    try:
        yield
    finally:
        leave_instance(token)


def enter_instance(tenant: str, instance_id: str) -> InstanceToken:
    """`about_instance` in two halves, for scopes that are not a `with` block."""
    return _instance.set((tenant, instance_id))


def leave_instance(token: InstanceToken) -> None:
    with contextlib.suppress(ValueError):  # as leave_caller: a stream closed elsewhere
        _instance.reset(token)


@contextmanager
def about_instance_key(key: str) -> Iterator[None]:
    """As `about_instance`, from an instance key `tenant/instance_id`."""
    tenant, _, instance_id = key.partition("/")
    with about_instance(tenant, instance_id):
        yield


def current_instance() -> tuple[str, str] | None:
    return _instance.get()


class InstanceFilter(logging.Filter):
    """Puts `tenant` and `instance_id` on each record (empty when the line concerns none):
    from `extra=`, else the instance in context, else the tenant of the call being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "instance_id", ""):
            scope = _instance.get()
            if scope is not None:
                record.tenant, record.instance_id = scope
        if not getattr(record, "tenant", ""):
            try:
                record.tenant = current_tenant()
            except LookupError:
                record.tenant = ""
        if not hasattr(record, "instance_id"):
            record.instance_id = ""
        return True


def make_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(InstanceFilter())
    return handler


def configure_logging(
    level: str, log_format: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Sends every log line of this process to `stream` (stderr) in `log_format`; returns
    the handler it installed."""
    return install(make_handler(log_format, stream), level)
