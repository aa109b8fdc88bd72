"""Checks on client-supplied fields. Each returns violations instead of raising, so one
response can name every bad field at once."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import timestamp_pb2

from zapgate.gateway.rpc.errors import FieldViolation, InvalidArgument
from zapgate.v1 import instance_pb2

INSTANCE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
E164_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
LABEL_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
MAX_DISPLAY_NAME = 128
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_MESSAGE_ID = 128  # ours are 40 characters; WhatsApp's (DownloadMedia) shorter still
MAX_PROXY_URL = 500  # the column's width
PROXY_SCHEMES = ("socks5", "http", "https")
MAX_WEBHOOK_URL = 2000  # the column's width
# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def normalize_instance_id(value: str) -> str:
    """Instance ids are case-insensitive: ASCII capitals are read as lower case, so
    `Sales-ABC` and `sales-abc` are one instance, and responses carry `sales-abc`. Only
    ASCII: Unicode lower-casing would fold other characters into valid ids (the Kelvin sign
    into `k`), which stay invalid instead."""
    return value.translate(_ASCII_LOWER)


def normalize_instance_ids(request: Any) -> None:
    """Rewrites every instance id a request names in lower case, in place, before any
    service reads it (the call guard runs this on every public call): `instance_id`,
    Subscribe's `instance_ids` and UpdateInstance's `instance.id`."""
    single, many, updated = _instance_id_fields(type(request))
    if single and request.instance_id != (lower := normalize_instance_id(request.instance_id)):
        request.instance_id = lower
    if updated:
        request.instance.id = normalize_instance_id(request.instance.id)
    if many:
        ids = request.instance_ids
        lowered = [normalize_instance_id(i) for i in ids]
        if lowered != list(ids):
            del ids[:]
            ids.extend(lowered)


# Per request type: (a string `instance_id`, a repeated string `instance_ids`, UpdateInstance).
_InstanceIdFields = tuple[bool, bool, bool]
_INSTANCE_ID_FIELDS: dict[type, _InstanceIdFields] = {}


def _instance_id_fields(kind: type) -> _InstanceIdFields:
    """Read from the message's descriptor once per type: probing a request for fields it
    lacks (getattr raising AttributeError inside) cost every call far more than this lookup."""
    found = _INSTANCE_ID_FIELDS.get(kind)
    if found is None:
        fields = getattr(getattr(kind, "DESCRIPTOR", None), "fields_by_name", {})
        single, many = fields.get("instance_id"), fields.get("instance_ids")
        found = _INSTANCE_ID_FIELDS[kind] = (
            single is not None and single.type == single.TYPE_STRING and not single.is_repeated,
            many is not None and many.type == many.TYPE_STRING and many.is_repeated,
            kind is instance_pb2.UpdateInstanceRequest,
        )
    return found


def check_instance_id(field: str, value: str) -> list[FieldViolation]:
    """`value` as normalize_instance_id left it."""
    if not value:
        return [FieldViolation(field, "required")]
    if not INSTANCE_ID.fullmatch(value):
        return [
            FieldViolation(
                field, "must match [a-z0-9][a-z0-9_-]{0,63} (capitals are read as lower case)"
            )
        ]
    return []


def check_phone(field: str, value: str) -> list[FieldViolation]:
    """Empty means "not set"; anything else must be E.164 (`+` and 7 to 15 digits)."""
    if value and not E164_PHONE.fullmatch(value):
        return [FieldViolation(field, "must be an E.164 number such as +5511999998888")]
    return []


def check_display_name(field: str, value: str) -> list[FieldViolation]:
    if len(value) > MAX_DISPLAY_NAME:
        return [FieldViolation(field, f"at most {MAX_DISPLAY_NAME} characters")]
    if value and not value.strip():
        return [FieldViolation(field, "must not be only white space")]
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return [FieldViolation(field, "must not contain control characters")]
    return []


def check_labels(field: str, labels: Mapping[str, str]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(labels) > MAX_LABELS:
        violations.append(FieldViolation(field, f"at most {MAX_LABELS} labels"))
    for key, value in sorted(labels.items()):
        if not LABEL_KEY.fullmatch(key):
            violations.append(
                FieldViolation(f"{field}[{key}]", "key must match [a-z][a-z0-9_.-]{0,62}")
            )
        if len(value) > MAX_LABEL_VALUE:
            violations.append(
                FieldViolation(f"{field}[{key}]", f"value at most {MAX_LABEL_VALUE} characters")
            )
    return violations


def check_text(field: str, value: str, max_chars: int) -> list[FieldViolation]:
    """A free-form string bound for the store: PostgreSQL text cannot hold NUL, and a
    varchar column rejects what does not fit."""
    if len(value) > max_chars:
        return [FieldViolation(field, f"at most {max_chars} characters")]
    if "\x00" in value:
        return [FieldViolation(field, "must not contain NUL characters")]
    return []


def check_message_id(field: str, value: str) -> list[FieldViolation]:
    """Required and bounded: a not-found error echoes the id, and gRPC refuses trailers
    over 16 KiB (the client would see RESOURCE_EXHAUSTED without details instead)."""
    if not value:
        return [FieldViolation(field, "required")]
    if len(value) > MAX_MESSAGE_ID or any(unicodedata.category(c) == "Cc" for c in value):
        return [FieldViolation(field, f"at most {MAX_MESSAGE_ID} printable characters")]
    return []


def check_proxy_url(field: str, value: str) -> list[FieldViolation]:
    """Empty means a direct connection."""
    if not value:
        return []
    if too_long := check_text(field, value, MAX_PROXY_URL):
        return too_long
    parsed = urlsplit(value)
    if parsed.scheme not in PROXY_SCHEMES or not parsed.hostname:
        schemes = ", ".join(f"{s}://" for s in PROXY_SCHEMES)
        return [FieldViolation(field, f"must be a proxy URL ({schemes}host:port)")]
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None:
        return [FieldViolation(field, "must name a port (host:port)")]
    return []


def check_webhook_url(field: str, value: str) -> list[FieldViolation]:
    """Required; http:// or https:// with a host, no credentials, no fragment."""
    if not value:
        return [FieldViolation(field, "required")]
    if too_long := check_text(field, value, MAX_WEBHOOK_URL):
        return too_long
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in value):
        return [FieldViolation(field, "must not contain white space or control characters")]
    try:
        parsed = urlsplit(value)
        parsed.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return [FieldViolation(field, "must be an http:// or https:// URL")]
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return [FieldViolation(field, "must be an http:// or https:// URL")]
    if parsed.username is not None or parsed.password is not None:
        return [FieldViolation(field, "must not carry credentials (the signature proves who sent)")]
    if parsed.fragment:
        return [FieldViolation(field, "must not have a #fragment")]
    return []


def check_timestamp(field: str, value: timestamp_pb2.Timestamp) -> list[FieldViolation]:
    """Every Timestamp a request carries goes through here before anything converts it:
    protobuf's own conversions raise ValueError outside this range."""
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        return [FieldViolation(field, "seconds must be within years 1 to 9999")]
    if not 0 <= value.nanos <= MAX_NANOS:
        return [FieldViolation(field, f"nanos must be within 0..{MAX_NANOS}")]
    return []


def check_tenant(value: str) -> None:
    if not TENANT_NAME.fullmatch(value):
        raise InvalidArgument([FieldViolation("tenant", "must match [a-z0-9][a-z0-9_-]{0,63}")])


def raise_if_any(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)
