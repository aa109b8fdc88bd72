"""Private files and directories: the data dir holds the state store (API key hashes,
messages, contacts) and maybe the master key; the runtime dir holds plaintext sessions.
Nothing zapgate creates there may be readable by group or others."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

# Files 0600, directories 0700: set first thing in `zapgate serve` and in each worker, so
# every file anybody (SQLite, whatsmeow, the simulator) creates afterwards is private.
PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    os.umask(PRIVATE_UMASK)


def exposed(path: Path) -> bool:
    """True when group or others may read, write or enter `path`."""
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)


def warn_if_exposed(path: Path, what: str) -> None:
    """Warns loudly (and changes nothing: the directory is the operator's) when `path` is
    open to group or others."""
    if exposed(path):
        mode = stat.S_IMODE(path.stat().st_mode)
        log.warning(
            "%s %s IS READABLE BY OTHER USERS (mode %04o): it holds secrets. Fix it with: "
            "chmod 700 %s",
            what.upper(),
            path,
            mode,
            path,
        )


def private_file(path: Path) -> None:
    """Creates `path` empty with mode 0600 if missing, else makes it 0600 (a file an older
    version created 0644)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def prepare_data_dir(path: Path) -> None:
    """Creates the data dir 0700, or warns when an existing one is open to others."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    warn_if_exposed(path, "data dir")
