"""The runtime directory holds plaintext session stores, so it must be private and should be
memory-backed: tmpfs never writes them to a disk (and forgets them on reboot, which the
encrypted snapshots cover)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from zapgate.gateway.ops.file_modes import warn_if_exposed

log = logging.getLogger(__name__)

MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}
MOUNTS = Path("/proc/mounts")


def filesystem_of(path: Path) -> str | None:
    """The type of the filesystem holding `path` (Linux), or None when unknown."""
    try:
        mounts = MOUNTS.read_text().splitlines()
    except OSError:
        return None
    target, best, kind = str(path.resolve()), "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fields[2]
    return kind


def prepare_runtime_dir(path: Path) -> None:
    """Creates the directory 0700 (missing parents too) and warns loudly when it is not
    memory-backed, or was open to other users (its sessions may have been read)."""
    if path.is_dir():
        warn_if_exposed(path, "runtime dir")
    for missing in [p for p in (*reversed(path.parents), path) if not p.exists()]:
        missing.mkdir(exist_ok=True, mode=0o700)  # mkdir(parents=True) makes parents 0755
    os.chmod(path, 0o700)
    kind = filesystem_of(path)
    if kind not in MEMORY_FILESYSTEMS:
        log.warning(
            "RUNTIME DIR %s IS ON %s, NOT ON MEMORY-BACKED STORAGE: plaintext WhatsApp session "
            "keys will be written to a disk. Use --runtime-dir on a tmpfs (e.g. /dev/shm, or a "
            "tmpfs volume in a container).",
            path,
            kind or "an unknown filesystem",
        )
