"""`zapgate webhooks list`: the tenant's webhooks and where their deliveries stand, from a
running server through the Python client (one JSON object per line)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from zapgate.gateway.cli.instances import _add_client_flags, _call
from zapgate_client import Client
from zapgate_client.v1 import event_pb2, webhook_pb2


def add_commands(commands: Any) -> None:
    webhooks = commands.add_parser("webhooks", help="inspect webhooks on a running server")
    actions = webhooks.add_subparsers(title="webhooks")
    listing = actions.add_parser("list", help="list webhooks and their delivery status")
    _add_client_flags(listing)
    listing.set_defaults(run=lambda args: _call(args, _list))


async def _list(client: Client, args: argparse.Namespace) -> None:
    token = ""
    while True:
        page = await client.webhooks.ListWebhooks(
            webhook_pb2.ListWebhooksRequest(page_size=1000, page_token=token)
        )
        for webhook in page.webhooks:
            print(json.dumps(summary(webhook)))
        token = page.next_page_token
        if not token:
            return


def summary(webhook: webhook_pb2.Webhook) -> dict[str, object]:
    delivery = webhook.delivery
    return {
        "id": webhook.id,
        "url": webhook.url,
        "status": event_pb2.WebhookStatus.Name(delivery.status).removeprefix("WEBHOOK_STATUS_"),
        "cursor": delivery.cursor,
        "lag_events": delivery.lag_events,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "disabled_reason": delivery.disabled_reason,
    }
