"""Tells the session keeper which session stores were just written, from inotify.

Without it the keeper has to stat every store over and over to notice a change: at 10,000
instances that polling was most of an idle node's CPU (docs/benchmarks.md, "One node at
scale"). With it, a quiet store costs nothing until its directory reports a write.

One inotify watch per directory holding stores (an instance's own runtime directory), shared
by the stores in it. Linux only; where inotify is missing or a directory cannot be watched
(it does not exist yet, or the kernel's limit on watches is reached), `add` says so and the
keeper keeps polling that store as before."""

from __future__ import annotations

import contextlib
import errno
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (tenant, instance id)

# What a write to an SQLite store, its journal or its WAL, or an atomic replace, looks like
# from its directory. Not the -shm file: readers touch it too (the keeper's own snapshots).
IN_MODIFY, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x2, 0x40, 0x80, 0x100, 0x200
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
WRITES = IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
SHARED_MEMORY_SUFFIX = "-shm"


class _Event(Protocol):
    wd: int
    mask: int
    name: str


class _Notifier(Protocol):
    """The part of inotify_simple.INotify this module uses."""

    def fileno(self) -> int: ...
    def add_watch(self, path: str, mask: int) -> int: ...
    def rm_watch(self, wd: int) -> None: ...
    def read(self, timeout: int | None = None) -> list[_Event]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Changes:
    written: list[Key]
    lost: bool  # the kernel's queue overflowed: any watched store may have been written


class StoreWatch:
    """Watches stores' directories; `read` says which stores were written since."""

    def __init__(self, notifier: _Notifier) -> None:
        self._notifier = notifier
        self._stores: dict[int, dict[str, Key]] = {}  # watch -> store file name -> key
        self._watch_of: dict[Key, tuple[int, str]] = {}
        self._limit_reached = False

    def fileno(self) -> int:
        return self._notifier.fileno()

    def add(self, key: Key, store: Path) -> bool:
        """Watches the store's directory for writes to it. False when it cannot be
        watched (the caller polls it instead)."""
        if key in self._watch_of:
            return True
        try:
            wd = self._notifier.add_watch(str(store.parent), WRITES)
        except ValueError:  # closed: the node is stopping
            return False
        except OSError as error:
            if error.errno == errno.ENOSPC and not self._limit_reached:
                self._limit_reached = True  # said once, not for each of thousands of stores
                log.warning(
                    "inotify watch limit reached (sysctl fs.inotify.max_user_watches): %s "
                    "and the stores watched after it are polled instead",
                    store,
                )
            return False
        self._stores.setdefault(wd, {})[store.name] = key
        self._watch_of[key] = (wd, store.name)
        return True

    def remove(self, key: Key) -> None:
        found = self._watch_of.pop(key, None)
        if found is None:
            return
        wd, name = found
        names = self._stores.get(wd, {})
        names.pop(name, None)
        if not names:
            self._stores.pop(wd, None)
            # already gone with its directory, or closed with the node
            with contextlib.suppress(OSError, ValueError):
                self._notifier.rm_watch(wd)

    def watching(self, key: Key) -> bool:
        return key in self._watch_of

    def read(self) -> Changes:
        """What the kernel has queued (call it when the fd is readable): each store
        written since, once however many writes it had."""
        written: dict[Key, None] = {}
        lost = False
        for event in self._notifier.read(timeout=0):
            if event.mask & IN_Q_OVERFLOW:
                lost = True
                continue
            names = self._stores.get(event.wd)
            if names is None:
                continue
            if event.mask & IN_IGNORED:  # the directory is gone, and its watch with it:
                for key in self._stores.pop(event.wd).values():
                    self._watch_of.pop(key, None)
                    written[key] = None  # look now; polled from now on
                continue
            store = names.get(_store_name_of(event.name))
            if store is not None:
                written[store] = None
        return Changes(list(written), lost)

    def close(self) -> None:
        self._notifier.close()


def _store_name_of(file_name: str) -> str:
    """The store a file of its directory belongs to: `s.db-wal` and `s.db-journal`
    belong to `s.db` (the shared-memory file is left out: readers write it)."""
    if file_name.endswith(SHARED_MEMORY_SUFFIX):
        return ""
    for suffix in ("-wal", "-journal"):
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def open_store_watch() -> StoreWatch | None:
    """A StoreWatch on a fresh inotify instance, or None where inotify is not available
    (not Linux, the package missing, or the per-user limit of inotify instances reached)."""
    try:
        from inotify_simple import INotify  # Linux only
    except ImportError:
        return None
    try:
        notifier: _Notifier = INotify(nonblocking=True)
    except OSError as error:
        log.warning("inotify unavailable (%s): session stores are polled", error)
        return None
    return StoreWatch(notifier)
