"""Webhook signing secrets: `whsec_` + base64 of random bytes (Standard Webhooks), sealed at
rest with the master key by the same AES-256-GCM envelope as session snapshots
(sessions/vault.py). The owner bound into the seal is `webhook:<tenant>/<id>`, so a sealed
secret copied to another webhook (or passed off as a session) fails to open."""

from __future__ import annotations

import base64
import binascii
import secrets

from zapgate.sessions.vault import Keyring, SealedSession, seal

PREFIX = "whsec_"
GENERATED_BYTES = 24
MIN_BYTES = 24
MAX_BYTES = 64


def generate_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_BYTES)).decode()


def secret_key(secret: str) -> bytes | None:
    """The HMAC key of a secret, or None when it is not `whsec_` + base64 of 24..64 bytes."""
    if not secret.startswith(PREFIX):
        return None
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if MIN_BYTES <= len(key) <= MAX_BYTES else None


def _owner(tenant: str, webhook_id: str) -> str:
    return f"webhook:{tenant}/{webhook_id}"


def seal_secret(keyring: Keyring, tenant: str, webhook_id: str, secret: str) -> SealedSession:
    return seal(keyring.current, _owner(tenant, webhook_id), 0, secret.encode())


def open_secret(keyring: Keyring, tenant: str, webhook_id: str, sealed: SealedSession) -> str:
    """Raises sessions.vault.Undecryptable when no configured master key opens it."""
    return keyring.open(_owner(tenant, webhook_id), sealed).decode()


def rewrap_secret(
    keyring: Keyring, tenant: str, webhook_id: str, sealed: SealedSession
) -> SealedSession:
    """The same sealed secret with its data key wrapped by the keyring's current key."""
    return keyring.rewrap(_owner(tenant, webhook_id), sealed)
