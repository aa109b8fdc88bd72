"""Rows of the outbox tables as the message repository hands them to a writer."""

from __future__ import annotations

from typing import Any


def message_row(n: int) -> dict[str, Any]:
    return {
        "id": f"msg-{n}",
        "tenant": "acme",
        "instance_id": "shop",
        "recipient_jid": "5511@s.whatsapp.net",
        "kind": "text",
        "content": {"text": f"m{n}", "variables": {"name": "Ana"}},
        "media": b"\x00\x01" if n % 2 else None,
        "state": 1,
        "failure_reason": "",
        "failure_detail": "",
        "priority": 0,
        "idempotency_key": None,
        "whatsapp_message_id": "",
        "send_at_us": n,
        "expire_us": None,
        "create_time_us": n,
        "update_time_us": n,
        "sent_time_us": None,
    }


def event_row(n: int) -> dict[str, Any]:
    return {"tenant": "acme", "instance_id": "shop", "type": 3, "payload": b"e%d" % n, "time_us": n}
