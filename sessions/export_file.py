"""A portable, passphrase-encrypted file holding one instance's session, for backups and for
moving an instance to another host. The passphrase is stretched with scrypt (a password is
not a key); AES-256-GCM authenticates the JSON header too, so no field can be altered."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

FORMAT = "zapgate-session-export-v1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # about 32 MiB and 0.1 s: slow to guess


class ExportFileError(Exception):
    """Not an export file, a damaged one, or the wrong passphrase."""


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal_export(image: bytes, meta: dict[str, Any], passphrase: str) -> bytes:
    if not passphrase:
        raise ExportFileError("a passphrase is required")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {
        "format": FORMAT,
        "meta": meta,
        "kdf": {
            "name": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
        },
        "nonce": base64.b64encode(nonce).decode(),
    }
    header_bytes = json.dumps(header, sort_keys=True).encode()
    key = _key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return header_bytes + b"\n" + AESGCM(key).encrypt(nonce, image, header_bytes)


def open_export(data: bytes, passphrase: str) -> tuple[dict[str, Any], bytes]:
    """(meta, session store image). Raises ExportFileError."""
    header_bytes, _, ciphertext = data.partition(b"\n")
    try:
        header = json.loads(header_bytes)
        kdf = header["kdf"] if header.get("format") == FORMAT else {}
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(header["nonce"])
        key = _key(passphrase, salt, int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
    except (ValueError, KeyError, TypeError):
        raise ExportFileError(f"not a {FORMAT} file") from None
    try:
        image = AESGCM(key).decrypt(nonce, ciphertext, header_bytes)
    except InvalidTag:
        raise ExportFileError("wrong passphrase, or the file was altered") from None
    return dict(header["meta"]), image
