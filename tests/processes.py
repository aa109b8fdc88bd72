"""What /proc says of a process's children (Linux): the engine workers a gateway spawned."""

from __future__ import annotations

import contextlib
from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """Pids of `pid`'s children, over all its threads; [] for a process already gone."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # a thread or the process ended meanwhile
            found += [int(p) for p in (task / "children").read_text().split()]
    return found
