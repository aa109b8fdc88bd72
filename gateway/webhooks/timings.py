"""How webhook deliveries are paced: request timeout, retry backoff, when a webhook that
keeps failing stops, how many requests run at once."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class WebhookSettings:
    request_timeout_seconds: float = 10.0
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 600.0
    # A webhook whose deliveries fail for this long is marked FAILING and stops.
    failing_after_seconds: float = 24 * 3600.0
    # Requests in flight over all webhooks (each webhook has at most one: strict order).
    max_concurrent: int = 64
    # Webhooks to private, loopback, link-local... addresses (address_guard.py).
    allow_private: bool = False
    # Evolution-compatible payloads carry this as `server_url`.
    server_url: str = ""
    # A delivery loop waiting for new events also looks again this often (a safety net:
    # appends wake it, other nodes' too in cluster mode, through LISTEN/NOTIFY).
    poll_seconds: float = 1.0


def retry_delay(
    settings: WebhookSettings, attempts: int, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempts-1))]."""
    ceiling = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
    return (rng or random).uniform(0, ceiling)
