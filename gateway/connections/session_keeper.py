"""Keeps every session's encrypted snapshot fresh, and restores sessions from it.

The plaintext store lives only in the runtime directory (tmpfs). The keeper, in the core,
copies it (sessions/store_file.py), encrypts it (sessions/vault.py) and stores it as the next
generation: soon after the store changes (debounced), periodically, and whenever the
supervisor asks (after pairing, after a worker died, on shutdown). A whole-machine crash
loses the changes since the last snapshot: at most about `max_delay` seconds of a busy
session's updates (usually key rotations of Signal sessions, which recover by themselves).

How it notices a change: inotify tells it which stores were written (store_watch.py), so a
quiet store costs nothing; a store that cannot be watched (no inotify) is polled, its
(mtime, size) compared with the last seen."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from zapgate.gateway.connections.store_watch import StoreWatch
from zapgate.gateway.ops.logs import instance_fields
from zapgate.gateway.store.fencing import NO_FENCING, Fenced, Fencing
from zapgate.gateway.store.snapshots import SnapshotRepository, StaleGeneration
from zapgate.sessions.store_file import read_store, write_store
from zapgate.sessions.thread_batch import ThreadBatch
from zapgate.sessions.vault import Keyring, SealedSession, Undecryptable, seal

log = logging.getLogger(__name__)

StorePathOf = Callable[[str, str], Path]
SNAPSHOTS_AT_ONCE = 32


@dataclass(frozen=True)
class KeeperTimings:
    poll_seconds: float = 0.5
    debounce_seconds: float = 0.5  # snapshot once the store was quiet this long...
    max_delay_seconds: float = 2.0  # ...or has been changing for this long
    periodic_seconds: float = 600.0
    # A store unchanged for `quiet_after_seconds` is looked at only every 2.5-5 s
    # (`quiet_poll_seconds`, spread) instead of on every poll: stat-ing 10,000 idle stores
    # twice a second cost a third of a core (docs/benchmarks.md, "One node at scale").
    quiet_after_seconds: float = 60.0
    quiet_poll_seconds: float = 5.0


@dataclass
class Watched:
    fingerprint: tuple[int, int] = (0, 0)  # (mtime_ns, size) last seen
    dirty_since: float | None = None
    changed_at: float = 0.0
    last_snapshot_at: float = 0.0
    digest: bytes = b""  # SHA-256 of the last snapshotted image
    # (generation, why not) of the stored snapshot last checked against the keyring: the
    # check runs once per generation, not on every snapshot
    verdict: tuple[int, str] | None = None
    next_poll_at: float = 0.0  # monotonic; a quiet store is not stat-ed before then
    written: bool = False  # inotify reported a write the keeper has not looked at yet
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SessionKeeper:
    def __init__(
        self,
        snapshots: SnapshotRepository,
        keyring: Keyring,
        store_path_of: StorePathOf,
        timings: KeeperTimings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        fencing: Fencing = NO_FENCING,
        store_watch: StoreWatch | None = None,
    ) -> None:
        self._snapshots = snapshots
        self._fencing = fencing  # cluster mode: a snapshot is written under the lease only
        self.keyring = keyring
        self._store_path_of = store_path_of
        self.timings = timings or KeeperTimings()
        self._monotonic = monotonic
        self._watched: dict[tuple[str, str], Watched] = {}
        self._paths: dict[tuple[str, str], StorePaths] = {}
        self._spread = 0.0  # spreads quiet stores' polls over time (see _next_poll_at)
        # (next poll time, tiebreak, key) of every watched store: a poll visits only the
        # stores due, not all 10,000 (entries of unwatched stores are dropped when popped)
        self._polls: list[tuple[float, int, tuple[str, str]]] = []
        self._tiebreak = itertools.count()
        # Reports writes to the stores it watches: those are looked at only then (and for
        # the periodic snapshot), never polled. None: every store is polled.
        self._store_watch = store_watch
        # After a restart every instance restores at once: their decrypts and writes go to
        # a thread a batch at a time, not one hand-off each.
        self._restores = ThreadBatch()

    def watch(self, tenant: str, instance_id: str) -> None:
        self._watched_of((tenant, instance_id))

    def _watched_of(self, key: tuple[str, str]) -> Watched:
        watched = self._watched.get(key)
        if watched is None:
            watched = self._watched[key] = Watched()
            heapq.heappush(self._polls, (watched.next_poll_at, next(self._tiebreak), key))
            if self._store_watch is not None:
                self._store_watch.add(key, self._store_path_of(*key))
        return watched

    def unwatch(self, tenant: str, instance_id: str) -> None:
        self._watched.pop((tenant, instance_id), None)
        self._paths.pop((tenant, instance_id), None)
        if self._store_watch is not None:
            self._store_watch.remove((tenant, instance_id))

    # For metrics (gateway/ops/metrics.py), read at scrape time.
    def watched_count(self) -> int:
        return len(self._watched)

    def polled_count(self) -> int:
        """Watched stores that inotify does not report on: polled instead."""
        if self._store_watch is None:
            return len(self._watched)
        return sum(not self._store_watch.watching(key) for key in self._watched)

    def snapshot_ages(self) -> list[float]:
        """Seconds since each watched store was last snapshotted or found unchanged (stores
        not looked at yet are left out)."""
        now = self._monotonic()
        return [now - w.last_snapshot_at for w in self._watched.values() if w.last_snapshot_at]

    def unsaved_ages(self) -> list[float]:
        """Seconds each store with changes no snapshot holds yet has had them."""
        now = self._monotonic()
        return [now - w.dirty_since for w in self._watched.values() if w.dirty_since is not None]

    async def snapshot(self, tenant: str, instance_id: str) -> bool:
        """Snapshots the store now if it differs from the last snapshot. True if written."""
        watched = self._watched_of((tenant, instance_id))
        async with watched.lock:
            path = self._store_path_of(tenant, instance_id)
            try:
                image = await asyncio.to_thread(read_store, path)
            except FileNotFoundError:
                return False
            digest = hashlib.sha256(image).digest()
            if digest != watched.digest:
                await self._store(tenant, instance_id, image, watched)
            # Clean only once stored: a failed store leaves the change due for the next poll.
            watched.dirty_since = None
            watched.last_snapshot_at = self._monotonic()
            if digest == watched.digest:
                return False
            watched.digest = digest
            return True

    async def _store(self, tenant: str, instance_id: str, image: bytes, watched: Watched) -> None:
        owner = f"{tenant}/{instance_id}"
        for _ in range(3):
            latest = await self._snapshots.latest(tenant, instance_id)
            if latest is not None:
                self._check_replaceable(owner, latest, watched)
            generation = (latest.generation if latest else 0) + 1
            sealed = await asyncio.to_thread(seal, self.keyring.current, owner, generation, image)
            try:
                fence = self._fencing.token(tenant, instance_id)
                await self._snapshots.save(tenant, instance_id, sealed, fence)
            except StaleGeneration:
                continue
            except Fenced:
                self.unwatch(tenant, instance_id)
                self._fencing.lost(tenant, instance_id)
                raise
            watched.verdict = (generation, "")  # sealed under the current key just now
            fields = instance_fields(tenant, instance_id)
            log.debug(
                "snapshot %s generation %d (%d bytes)", owner, generation, len(image), extra=fields
            )
            return
        raise RuntimeError(f"could not store a snapshot of {owner}: generations keep moving")

    def _check_replaceable(self, owner: str, latest: SealedSession, watched: Watched) -> None:
        """A snapshot never replaces one the keyring cannot open: started with a wrong
        master key, the core would otherwise re-seal every session under it and lose them
        all. Raises Undecryptable."""
        if watched.verdict is None or watched.verdict[0] != latest.generation:
            try:
                self.keyring.unwrap(owner, latest)
            except Undecryptable as error:
                failure = (
                    f"the stored snapshot (generation {latest.generation}) does not open with "
                    f"the configured master keys ({error}); it is kept as it is and no new "
                    f"snapshot replaces it: start with the master key it was sealed with"
                )
            else:
                failure = ""
            watched.verdict = (latest.generation, failure)
        if watched.verdict[1]:
            raise Undecryptable(watched.verdict[1])

    async def restore(self, tenant: str, instance_id: str, expected_generation: int) -> bool:
        """Writes the newest snapshot to the runtime dir unless a store is already there
        (then it is newer: it is snapshotted instead). False when there is no snapshot.
        Raises Undecryptable; the blob is never touched, nor is a store in the runtime dir."""
        path = self._store_path_of(tenant, instance_id)
        if path.exists():
            try:
                await self.snapshot(tenant, instance_id)
            except Undecryptable:
                self.unwatch(tenant, instance_id)  # no polling it until it is fixed
                raise
            return True
        sealed = await self._snapshots.latest(tenant, instance_id)
        if sealed is None:
            return False
        if sealed.generation != expected_generation:
            raise Undecryptable(
                f"snapshot generation {sealed.generation} is not the newest one "
                f"({expected_generation}): refusing to roll the session back"
            )
        digest, fingerprint = await self._restores.run(
            partial(self._open_and_write, f"{tenant}/{instance_id}", sealed, path)
        )
        # The store is its snapshot, as of now: the first poll must not find it "changed"
        # and read and hash it again (1,000 of them after a restart).
        watched = self._watched_of((tenant, instance_id))
        watched.digest, watched.fingerprint = digest, fingerprint
        watched.last_snapshot_at = self._monotonic()
        return True

    def _open_and_write(
        self, owner: str, sealed: SealedSession, path: Path
    ) -> tuple[bytes, tuple[int, int]]:
        """On a thread (with the other restores due at the same time): decrypt, write the
        store; its image's digest and the store's fingerprint."""
        image = self.keyring.open(owner, sealed)
        write_store(path, image)
        return hashlib.sha256(image).digest(), _fingerprint(StorePaths.of(path))

    async def forget(self, tenant: str, instance_id: str) -> None:
        """The session is gone for good (logout, delete): drop its snapshot."""
        self.unwatch(tenant, instance_id)
        await self._snapshots.delete(tenant, instance_id)

    def close(self) -> None:
        """Stops watching stores (once nothing snapshots any more)."""
        if self._store_watch is not None:
            self._store_watch.close()

    async def snapshot_all(self) -> None:
        for tenant, instance_id in list(self._watched):
            await self._snapshot_logged(tenant, instance_id)

    async def run(self) -> None:
        """Looks at the stores due (written, or polled: quiet ones less often); snapshots
        changed ones once settled, and all periodically."""
        store_watch = self._store_watch
        if store_watch is None:
            await self._run()
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(store_watch.fileno(), self._take_writes, store_watch)
        try:
            await self._run()
        finally:
            loop.remove_reader(store_watch.fileno())

    def _take_writes(self, store_watch: StoreWatch) -> None:
        """inotify has news: each store written is due for a look now."""
        try:
            changes = store_watch.read()
        except Exception:  # one bad read must not unhook the keeper from inotify
            log.exception("reading inotify events failed")
            return
        for key in list(self._watched) if changes.lost else changes.written:
            watched = self._watched.get(key)
            if watched is None:
                continue
            watched.written = True
            if watched.next_poll_at > self._monotonic():  # not already due
                watched.next_poll_at = self._monotonic()
                heapq.heappush(self._polls, (watched.next_poll_at, next(self._tiebreak), key))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.timings.poll_seconds)
            keys = self._due_polls()
            if not keys:
                continue
            written = [self._take_written(key) for key in keys]
            paths = [self._paths_of(key) for key in keys]
            fingerprints = await asyncio.to_thread(_fingerprints, paths)
            due = []
            for key, fingerprint, was_written in zip(keys, fingerprints, written, strict=True):
                watched = self._watched.get(key)
                if watched is not None and self._due(watched, fingerprint, was_written):
                    due.append(key)
                self._rewatch(key, fingerprint)
            # A few at once: their reads of the latest snapshot share one query, and a
            # wave of changes (every store after a restart) is not written one by one.
            for first in range(0, len(due), SNAPSHOTS_AT_ONCE):
                batch = due[first : first + SNAPSHOTS_AT_ONCE]
                await asyncio.gather(*(self._snapshot_logged(*key) for key in batch))
            for key in keys:
                if (watched := self._watched.get(key)) is not None:
                    watched.next_poll_at = self._next_poll_at(key, watched)
                    heapq.heappush(self._polls, (watched.next_poll_at, next(self._tiebreak), key))

    def _due_polls(self) -> list[tuple[str, str]]:
        """The watched stores due for a look now, each once, taken off the schedule."""
        now = self._monotonic()
        due: dict[tuple[str, str], None] = {}  # ordered, each key once
        while self._polls and self._polls[0][0] <= now:
            at, _, key = heapq.heappop(self._polls)
            watched = self._watched.get(key)
            # Not an entry of an earlier watch of the same store (unwatched, watched again).
            if watched is not None and watched.next_poll_at == at:
                due[key] = None
        return list(due)

    def _take_written(self, key: tuple[str, str]) -> bool:
        """Whether inotify reported a write since the last look, and from now on not
        (taken before the stat: a write after it is reported again)."""
        watched = self._watched.get(key)
        if watched is None or not watched.written:
            return False
        watched.written = False
        return True

    def _rewatch(self, key: tuple[str, str], fingerprint: tuple[int, int]) -> None:
        """A polled store whose directory exists by now (its store does) is watched from
        now on. A watched store found missing is polled from now on: its directory may be
        gone, and the kernel does not always say so at once (IN_IGNORED comes when the
        directory's inode is freed), while a new directory of the same name needs a new
        watch."""
        store_watch = self._store_watch
        if store_watch is None:
            return
        if fingerprint == (0, 0):
            store_watch.remove(key)
            return
        watched = self._watched.get(key)
        if watched is not None and not store_watch.watching(key):
            # a write just before the watch was added: look again
            watched.written = store_watch.add(key, self._store_path_of(*key))

    def _next_poll_at(self, key: tuple[str, str], watched: Watched) -> float:
        """On the next poll while the store changes or has unsaved changes. A store inotify
        watches: then only for its periodic snapshot (a write makes it due at once). A
        polled one, once it has been quiet a while: after 2.5-5 s (spread, so quiet stores
        are not all due on the same poll)."""
        now = self._monotonic()
        if watched.dirty_since is not None or watched.written:
            return now
        if self._store_watch is not None and self._store_watch.watching(key):
            # Within the periodic interval, spread: stores restored together do not all
            # come due for their periodic read on the same poll.
            last_look = watched.last_snapshot_at or now
            return max(now, last_look + self.timings.periodic_seconds * self._spread_factor())
        if now - watched.changed_at < self.timings.quiet_after_seconds:
            return now
        return now + self.timings.quiet_poll_seconds * self._spread_factor()

    def _spread_factor(self) -> float:
        """0.5-1, consecutive calls spread evenly over that range."""
        self._spread = (self._spread + GOLDEN_RATIO) % 1.0
        return 0.5 + self._spread / 2

    def _paths_of(self, key: tuple[str, str]) -> StorePaths:
        """The store's paths, built once per watched store (polled every half second)."""
        paths = self._paths.get(key)
        if paths is None:
            paths = self._paths[key] = StorePaths.of(self._store_path_of(*key))
        return paths

    def _due(self, watched: Watched, fingerprint: tuple[int, int], written: bool) -> bool:
        """Whether to snapshot now. `written`: inotify saw a write (which may leave the
        fingerprint as it was: mtime moves in clock ticks, and the size may stay)."""
        now = self._monotonic()
        if fingerprint != watched.fingerprint or written:
            watched.fingerprint = fingerprint
            watched.changed_at = now
            watched.dirty_since = watched.dirty_since or now
        if watched.dirty_since is not None:
            settled = now - watched.changed_at >= self.timings.debounce_seconds
            overdue = now - watched.dirty_since >= self.timings.max_delay_seconds
            return settled or overdue
        return now - watched.last_snapshot_at >= self.timings.periodic_seconds

    async def _snapshot_logged(self, tenant: str, instance_id: str) -> None:
        fields = instance_fields(tenant, instance_id)
        try:
            await self.snapshot(tenant, instance_id)
        except Undecryptable as error:
            refusal = str(error)
        except Fenced as fenced:  # another node owns it now: its snapshots are the truth
            log.warning("snapshot refused: %s", fenced, extra=fields)
            return
        except Exception:
            log.exception("snapshot of %s/%s failed", tenant, instance_id, extra=fields)
            return
        else:
            return
        # Its stored snapshot no longer opens (replaced under another key): stop
        # snapshotting it rather than failing on every poll.
        self.unwatch(tenant, instance_id)
        log.error("session %s/%s: %s", tenant, instance_id, refusal, extra=fields)


GOLDEN_RATIO = 0.6180339887  # consecutive multiples mod 1 spread evenly over [0, 1)


@dataclass(frozen=True)
class StorePaths:
    """A store file and its write-ahead log, as strings: os.stat of a str is about half
    the cost of Path.stat, and the poll stats every watched store."""

    store: str
    wal: str

    @staticmethod
    def of(path: Path) -> StorePaths:
        return StorePaths(str(path), f"{path}-wal")


def _fingerprints(paths: list[StorePaths]) -> list[tuple[int, int]]:
    return [_fingerprint(path) for path in paths]


def _fingerprint(paths: StorePaths) -> tuple[int, int]:
    """Changes whenever the store or its journal changes."""
    mtime, size = 0, 0
    for candidate in (paths.store, paths.wal):
        try:
            stat = os.stat(candidate)
        except FileNotFoundError:
            continue
        mtime, size = max(mtime, stat.st_mtime_ns), size + stat.st_size
    return mtime, size
