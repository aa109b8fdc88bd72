"""Page tokens for keyset paging.

A token is opaque to clients: base64url of a small JSON object `{"v": 1, "after": …,
"filter": …}`, the keyset position the next page starts after and the filter it was issued
for (reusing it with another filter is an error, not a wrong page). Tokens are not signed:
anyone can forge one. Instead every decoded token is checked in full, against the exact
shape of its RPC's position (`Position`: a positive int64 seq, a bounded string id, or a
pair of bounded strings), before anything reaches SQL. So a forged token is either a
position a genuine token could have held (and pages over the caller's own tenant only), or
INVALID_ARGUMENT on `page_token`; never an error inside the store.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from zapgate.gateway.rpc.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 4096
MAX_INT64 = 2**63 - 1

T = TypeVar("T")


@dataclass(frozen=True)
class Position(Generic[T]):
    """The shape of one RPC's keyset position: `parse` returns the typed position from the
    decoded JSON value, or None when the value is not exactly that shape."""

    parse: Callable[[object], T | None]


def _seq(value: object) -> int | None:
    # bool is an int subclass; a JSON `true` is no seq.
    if type(value) is int and 0 < value <= MAX_INT64:
        return value
    return None


def _text(max_chars: int, min_chars: int = 1) -> Callable[[object], str | None]:
    def parse(value: object) -> str | None:
        if not isinstance(value, str) or "\x00" in value:
            return None
        return value if min_chars <= len(value) <= max_chars else None

    return parse


def _time(value: object) -> int | None:
    """A time in microseconds (a message's: 0 when WhatsApp gave none)."""
    if type(value) is int and 0 <= value <= MAX_INT64:
        return value
    return None


A = TypeVar("A")
B = TypeVar("B")


def _pair(
    first: Callable[[object], A | None], second: Callable[[object], B | None]
) -> Callable[[object], tuple[A, B] | None]:
    def parse(value: object) -> tuple[A, B] | None:
        if not isinstance(value, list) or len(value) != 2:
            return None
        a, b = first(value[0]), second(value[1])
        return None if a is None or b is None else (a, b)

    return parse


# Column widths from store/schema.py.
SEQ = Position(_seq)  # ListMessages: the outbox seq to continue before
INSTANCE_ID = Position(_text(64))  # ListInstances: the id to continue after
WEBHOOK_ID = Position(_text(40))  # ListWebhooks: the id to continue after
KEY_ID = Position(_text(32))  # ListKeys: the key id to continue after
GROUP_JID = Position(_text(100))  # ListGroups: the group JID to continue after
# ListContacts: (search_name, jid); a contact without any name has an empty search_name.
CONTACT_KEY = Position(_pair(_text(800, min_chars=0), _text(100)))
CHAT_KEY = Position(_pair(_time, _seq))  # ListChats: (newest activity, its storage seq)
# ListChatMessages, SearchMessages: (sent time, storage seq) of the last message shown.
CHAT_MESSAGE_KEY = Position(_pair(_time, _seq))


def encode_page_token(after: object, filter_key: str) -> str:
    raw = json.dumps({"v": TOKEN_VERSION, "after": after, "filter": filter_key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, filter_key: str, position: Position[T]) -> T | None:
    """The position to continue from (None for the first page)."""
    if not token:
        return None
    data = _decode(token)
    after = position.parse(data.get("after"))
    if data.get("v") != TOKEN_VERSION or after is None or not isinstance(data.get("filter"), str):
        raise _malformed()
    if data["filter"] != filter_key:
        raise InvalidArgument(
            [FieldViolation("page_token", "issued for a different filter; start over")]
        )
    return after


def _decode(token: str) -> dict[str, object]:
    if len(token) > MAX_TOKEN_CHARS:
        raise _malformed()
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError, RecursionError):  # UnicodeError is a ValueError
        raise _malformed() from None
    if not isinstance(data, dict):
        raise _malformed()
    return data


def _malformed() -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", "malformed page token")])


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
