"""A test's view of the HTTP port: Connect calls with httpx, read straight off the wire.

The envelopes (one flag byte, a 4-byte big-endian length, the message) are parsed here on
purpose, independently of the server's library, so the tests check the protocol itself."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2

END_STREAM = 0x02  # Connect's end-of-stream envelope (JSON: the error and trailers)
GRPC_WEB_TRAILERS = 0x80  # gRPC-Web's trailers envelope


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def json_envelope(message: dict[str, Any]) -> bytes:
    return envelope(json.dumps(message).encode())


def parse_envelopes(data: bytes) -> list[tuple[int, bytes]]:
    found, rest = [], data
    while rest:
        flags, size = struct.unpack(">BI", rest[:5])
        found.append((flags, rest[5 : 5 + size]))
        rest = rest[5 + size :]
    return found


async def stream_envelopes(response: httpx.Response) -> AsyncIterator[tuple[int, bytes]]:
    """Envelopes as they arrive (a live stream never ends by itself)."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            flags, size = struct.unpack(">BI", buffer[:5])
            if len(buffer) < 5 + size:
                break
            yield flags, buffer[5 : 5 + size]
            buffer = buffer[5 + size :]


@dataclass
class ConnectFailure:
    """A Connect error, details decoded."""

    code: str
    message: str
    reason: str = ""
    domain: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, error: dict[str, Any]) -> ConnectFailure:
        failure = cls(error["code"], error.get("message", ""))
        for detail in error.get("details", []):
            value = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
            if detail["type"] == "google.rpc.ErrorInfo":
                info = error_details_pb2.ErrorInfo.FromString(value)
                failure.reason, failure.domain = info.reason, info.domain
                failure.metadata = dict(info.metadata)
            elif detail["type"] == "google.rpc.BadRequest":
                bad = error_details_pb2.BadRequest.FromString(value)
                failure.violations = [(v.field, v.description) for v in bad.field_violations]
        return failure


def stream_end(payload: bytes) -> ConnectFailure | None:
    """The error an end-of-stream envelope carries, if any."""
    end = json.loads(payload)
    return ConnectFailure.from_json(end["error"]) if "error" in end else None


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


async def unary_json(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str | None
) -> tuple[int, dict[str, Any]]:
    """A unary Connect call with JSON: the HTTP status and the decoded body."""
    response = await client.post(
        path,
        content=json.dumps(body),
        headers={"content-type": "application/json", **(bearer(key) if key else {})},
    )
    return response.status_code, response.json()
