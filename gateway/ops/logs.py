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
exception message, say) is masked."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, TextIO

from zapgate.gateway.rpc.tenancy import current_tenant

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# These log SQL statements with their parameters (message texts, snapshot bytes) below
# WARNING, whatever our own level is.
QUIET_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg")
API_KEY = re.compile(r"\bzg_([A-Za-z0-9]+)_[A-Za-z0-9_\-]+")

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


def mask_secrets(text: str) -> str:
    """Masks the secret part of any API key in `text` (the key id stays, to tell keys apart)."""
    return API_KEY.sub(r"zg_\1_<redacted>", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, and tenant and
    instance_id when the line concerns an instance; exception and stack when there are."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        for field in ("tenant", "instance_id"):
            value = getattr(record, field, "")
            if value:
                line[field] = value
        if record.exc_info:
            line["exception"] = mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def make_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(InstanceFilter())
    return handler


def configure_logging(
    level: str, log_format: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Sends every log line of this process to `stream` (stderr) in `log_format`; returns
    the handler it installed."""
    handler = make_handler(log_format, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet_libraries()
    return handler


def quiet_libraries() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
