"""Where the master key comes from: `ZAPGATE_MASTER_KEY` (base64), or a key file; on the
embedded default, a key file generated on first start inside the data dir (with a warning:
whoever reads the data dir then holds both the lock and the key).

A key file may have companions left by `zapgate vault rotate-key`: `<file>.next` (the key a
rotation is moving to) and `<file>.previous` (the key it moved from). Both join the keyring,
so every snapshot stays readable whenever a rotation was interrupted."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from zapgate.sessions.vault import KEY_BYTES, Keyring, MasterKey

log = logging.getLogger(__name__)

ENV_KEY = "ZAPGATE_MASTER_KEY"
ENV_PREVIOUS_KEYS = "ZAPGATE_PREVIOUS_MASTER_KEYS"  # comma-separated, during rotations
DEFAULT_KEY_FILE = "master.key"
NEXT_SUFFIX = ".next"
PREVIOUS_SUFFIX = ".previous"


class MasterKeyError(Exception):
    pass


def parse_key(text: str, source: str) -> MasterKey:
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{source}: not base64") from None
    if len(secret) != KEY_BYTES:
        raise MasterKeyError(f"{source}: a master key is {KEY_BYTES} bytes of base64")
    return MasterKey(secret)


def encode_key(key: MasterKey) -> str:
    return base64.b64encode(key.secret).decode()


def write_key_file(path: Path, key: MasterKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(encode_key(key) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_key_file(path: Path) -> MasterKey:
    return parse_key(path.read_text(), str(path))


def resolve_key_file(data_dir: Path, key_file: Path | None) -> Path | None:
    """The key file in use, or None when the key comes from the environment."""
    if key_file is not None:
        return key_file
    if os.environ.get(ENV_KEY):
        return None
    return data_dir / DEFAULT_KEY_FILE


def load_keyring(
    data_dir: Path,
    key_file: Path | None,
    previous_files: Sequence[Path] = (),
    *,
    create: bool = False,
) -> Keyring:
    """The keyring for this configuration; with `create`, generates the embedded default."""
    others = [read_key_file(path) for path in previous_files]
    others += [
        parse_key(text, ENV_PREVIOUS_KEYS)
        for text in os.environ.get(ENV_PREVIOUS_KEYS, "").split(",")
        if text.strip()
    ]
    path = resolve_key_file(data_dir, key_file)
    if path is None:
        return Keyring(parse_key(os.environ[ENV_KEY], ENV_KEY), others)
    for companion in (Path(f"{path}{NEXT_SUFFIX}"), Path(f"{path}{PREVIOUS_SUFFIX}")):
        if companion.exists():
            others.append(read_key_file(companion))
    if not path.exists():
        if not create or key_file is not None:
            raise MasterKeyError(f"master key file {path} not found")
        write_key_file(path, MasterKey.generate())
        log.warning(
            "generated a master key in %s. Sessions are encrypted with it, but anyone who "
            "reads the data dir can read this file too: in production give the key with "
            "$%s or --master-key-file, kept apart from the data and its backups",
            path,
            ENV_KEY,
        )
    return Keyring(read_key_file(path), others)
