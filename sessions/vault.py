"""Session encryption at rest: envelope encryption with AES-256-GCM.

Each snapshot gets a fresh random 256-bit data key; the data key is wrapped (AES-GCM) by the
master key. The associated data binds a blob to its instance and generation, so a blob
copied to another instance or relabelled with another generation fails to open. Nonces are
random 96-bit values under keys used for one message each (data keys) or few (the master key
wraps one data key per snapshot: far below the 2^32 random-nonce limit)."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
FORMAT = b"zapgate-session-v1"


class Undecryptable(Exception):
    """The blob cannot be opened: wrong or missing master key, tampering, truncation, a blob
    of another instance or generation. The message says which, as far as can be told."""


@dataclass(frozen=True)
class MasterKey:
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a master key has {KEY_BYTES} bytes, not {len(self.secret)}")

    @property
    def key_id(self) -> str:
        """A public fingerprint naming the key (never the key itself)."""
        return hmac.new(self.secret, b"zapgate master key id", hashlib.sha256).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(AESGCM.generate_key(bit_length=256))


@dataclass(frozen=True)
class SealedSession:
    generation: int
    key_id: str  # which master key wrapped `wrapped_key`
    wrapped_key: bytes  # nonce + AES-GCM(master, data key)
    ciphertext: bytes | bytearray  # nonce + AES-GCM(data key, session bytes) + tag


def _aad(purpose: bytes, owner: str, generation: int) -> bytes:
    return b"|".join([FORMAT, purpose, owner.encode(), str(generation).encode()])


def seal(master: MasterKey, owner: str, generation: int, plaintext: bytes) -> SealedSession:
    """Encrypts one snapshot of `owner`'s session store (`owner`: "<tenant>/<instance>")."""
    data_key = AESGCM.generate_key(bit_length=256)
    body_nonce, wrap_nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    # nonce + ciphertext + tag written in place: one buffer, no copy of a large body
    body = bytearray(NONCE_BYTES + len(plaintext) + TAG_BYTES)
    body[:NONCE_BYTES] = body_nonce
    AESGCM(data_key).encrypt_into(
        body_nonce, plaintext, _aad(b"body", owner, generation), memoryview(body)[NONCE_BYTES:]
    )
    wrapped = AESGCM(master.secret).encrypt(wrap_nonce, data_key, _aad(b"key", owner, generation))
    return SealedSession(generation, master.key_id, wrap_nonce + wrapped, body)


class Keyring:
    """The current master key plus earlier ones still needed to open older blobs (during and
    after an interrupted rotation)."""

    def __init__(self, current: MasterKey, others: Iterable[MasterKey] = ()) -> None:
        self.current = current
        self._by_id = {key.key_id: key for key in (*others, current)}

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._by_id

    def open(self, owner: str, sealed: SealedSession) -> bytes:
        data_key = self.unwrap(owner, sealed)
        return _decrypt(data_key, sealed.ciphertext, _aad(b"body", owner, sealed.generation))

    def unwrap(self, owner: str, sealed: SealedSession) -> bytes:
        """The blob's data key: proves a master key of this ring opens it, without
        decrypting the body."""
        master = self._by_id.get(sealed.key_id)
        if master is None:
            raise Undecryptable(f"sealed with master key {sealed.key_id}, which is not configured")
        return _decrypt(master.secret, sealed.wrapped_key, _aad(b"key", owner, sealed.generation))

    def rewrap(self, owner: str, sealed: SealedSession) -> SealedSession:
        """The same ciphertext with its data key wrapped by the current master key."""
        data_key = self.unwrap(owner, sealed)
        nonce = os.urandom(NONCE_BYTES)
        aad = _aad(b"key", owner, sealed.generation)
        wrapped = AESGCM(self.current.secret).encrypt(nonce, data_key, aad)
        return SealedSession(
            sealed.generation, self.current.key_id, nonce + wrapped, sealed.ciphertext
        )


def _decrypt(key: bytes, blob: bytes | bytearray, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise Undecryptable("the blob is truncated")
    try:
        view = memoryview(blob)  # no copy of a large body
        return AESGCM(key).decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], aad)
    except InvalidTag:
        raise Undecryptable(
            "authentication failed: the blob was altered, truncated, or belongs to another "
            "instance or generation"
        ) from None
