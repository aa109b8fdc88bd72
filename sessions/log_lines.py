"""How log lines look, in the core and in its engine workers alike: text or one JSON object
per line, with any API key's secret masked. The core adds the tenant and instance of the
work in progress (gateway/ops/logs.py); a worker has no such context, so its lines carry
what the message says.

Kept in sessions/ so a worker process, which never imports gateway/, writes the same lines
as the core (`zapgate serve --log-format json` turns both into JSON)."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# These log SQL statements with their parameters (message texts, snapshot bytes) below
# WARNING, whatever our own level is.
QUIET_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg")
API_KEY = re.compile(r"\bzg_([A-Za-z0-9]+)_[A-Za-z0-9_\-]+")


def mask_secrets(text: str) -> str:
    """Masks the secret part of any API key in `text` (the key id stays, to tell keys apart)."""
    return API_KEY.sub(r"zg_\1_<redacted>", text)


class TextFormatter(logging.Formatter):
    def __init__(self, line_format: str = TEXT_FORMAT) -> None:
        super().__init__(line_format)

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


def formatter_for(log_format: str, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    return JsonFormatter() if log_format == "json" else TextFormatter(text_format)


def install(handler: logging.Handler, level: str) -> logging.Handler:
    """Makes `handler` the only one of this process's root logger, at `level`."""
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
