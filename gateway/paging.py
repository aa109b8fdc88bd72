"""Opaque page tokens for keyset paging. A token remembers the last id returned and the
filter it was issued for, so reusing it with another filter is an error, not a wrong page."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from zapgate.gateway.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageToken:
    after_id: str
    filter_key: str

    def encode(self) -> str:
        raw = json.dumps({"after": self.after_id, "filter": self.filter_key}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, filter_key: str) -> str:
    """The id to continue after ('' for the first page)."""
    if not token:
        return ""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        parsed = PageToken(str(data["after"]), str(data["filter"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument([FieldViolation("page_token", "malformed page token")]) from None
    if parsed.filter_key != filter_key:
        raise InvalidArgument(
            [FieldViolation("page_token", "issued for a different filter; start over")]
        )
    return parsed.after_id


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
