"""Bodies of webhook deliveries: the Event in proto3 canonical JSON (the default), or
Evolution API v2's shape (evolution.py)."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from zapgate.v1 import event_pb2, webhook_pb2


def proto_json(event: event_pb2.Event) -> bytes:
    return _dump(json_format.MessageToDict(event))


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_body(format: int, webhook_id: str, time_iso: str) -> bytes:
    """What TestWebhook sends: no event of the log, marked as a test."""
    if format == webhook_pb2.WEBHOOK_FORMAT_EVOLUTION:
        return _dump(
            {"event": "webhook.test", "data": {"webhookId": webhook_id}, "date_time": time_iso}
        )
    return _dump({"test": True, "webhookId": webhook_id, "time": time_iso})
