"""Retries of calls that fail with UNAVAILABLE: exponential backoff with full jitter."""

from __future__ import annotations

import importlib
import json
import pkgutil
import random
from dataclasses import dataclass

from zapgate_client import v1


def zapgate_services() -> list[str]:
    """Full names of every service in the generated `zapgate_client.v1` modules."""
    modules = [
        importlib.import_module(f"{v1.__name__}.{module.name}")
        for module in pkgutil.iter_modules(v1.__path__)
        if module.name.endswith("_pb2")
    ]
    return sorted(s.full_name for m in modules for s in m.DESCRIPTOR.services_by_name.values())


@dataclass(frozen=True)
class Retry:
    """How calls are retried when the server is unreachable or says UNAVAILABLE.

    Unary calls, and server streams until their first message, are retried by gRPC itself
    (a retry policy in the channel's service config; gRPC caps `attempts` at 5). A broken
    event subscription is resumed with the same backoff, for as long as it is iterated.
    """

    attempts: int = 5
    initial_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 10.0
    multiplier: float = 2.0

    def channel_options(self) -> list[tuple[str, str | int]]:
        """The retry policy, and reconnects after a lost connection on the same backoff (a
        channel waiting to reconnect fails calls at once; gRPC's own default waits up to 120 s)."""
        reconnect: list[tuple[str, str | int]] = [
            ("grpc.initial_reconnect_backoff_ms", round(self.initial_backoff_seconds * 1000)),
            ("grpc.max_reconnect_backoff_ms", round(self.max_backoff_seconds * 1000)),
        ]
        if self.attempts < 2:  # gRPC rejects a retry policy with fewer attempts
            return reconnect
        return [("grpc.service_config", self.service_config()), *reconnect]

    def service_config(self) -> str:
        """The channel's `grpc.service_config`: this policy on every zapgate service."""
        policy = {
            "maxAttempts": self.attempts,
            "initialBackoff": f"{self.initial_backoff_seconds}s",
            "maxBackoff": f"{self.max_backoff_seconds}s",
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        names = [{"service": service} for service in zapgate_services()]
        return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row (0 for the first)."""
        ceiling = self.initial_backoff_seconds * self.multiplier ** min(failures, 64)
        return random.uniform(0, min(self.max_backoff_seconds, ceiling))  # noqa: S311 (jitter)
