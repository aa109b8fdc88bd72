"""Cost of a session snapshot (consistent copy + envelope encryption) and of a restore
(decryption + write), as ratios to raw AES-256-GCM over the same bytes, in the same run.
The snapshot is also compared with its honest floor: an SQLite online backup of the same
store (to memory, serialized) plus AES-256-GCM of those bytes with one key.

    python bench/snapshot_cost.py [--sizes 65536,1048576] [--rounds 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from zapgate.sessions.store_file import read_store, write_store
from zapgate.sessions.vault import Keyring, MasterKey, seal


def make_store(path: Path, size: int) -> None:
    """A real SQLite database of about `size` bytes (random rows, like key material)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE keys (id INTEGER PRIMARY KEY, material BLOB)")
        rows = max(1, size // 1100)
        db.executemany(
            "INSERT INTO keys (material) VALUES (?)", [(os.urandom(1000),) for _ in range(rows)]
        )


def backup_image(path: Path) -> bytes:
    """The SQLite online backup of the store, as bytes."""
    with (
        contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as source,
        contextlib.closing(sqlite3.connect(":memory:")) as copy,
    ):
        source.backup(copy)
        return copy.serialize()


def medians_alternated(
    rounds: int, first: Callable[[], object], second: Callable[[], object]
) -> tuple[float, float]:
    """Median seconds per call of each, the calls alternating."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for operation, times in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            operation()
            times.append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def best_of(rounds: int, operation: Callable[[], object]) -> float:
    """Median seconds per call (the median resists noise from other work on the box)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(size: int, rounds: int) -> None:
    master = MasterKey.generate()
    ring = Keyring(master)
    memory = "/dev/shm" if Path("/dev/shm").is_dir() else None  # like the runtime dir
    with tempfile.TemporaryDirectory(dir=memory) as tmp:
        store, restored = Path(tmp) / "session.db", Path(tmp) / "restored" / "session.db"
        make_store(store, size)
        image = store.read_bytes()
        raw_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
        raw_ct = AESGCM(raw_key).encrypt(nonce, image, None)
        sealed = seal(master, "acme/shop", 1, image)

        raw_encrypt = best_of(rounds, lambda: AESGCM(raw_key).encrypt(os.urandom(12), image, None))
        raw_decrypt = best_of(rounds, lambda: AESGCM(raw_key).decrypt(nonce, raw_ct, None))
        # Alternated call by call, so a burst of other work on the box hits both sides.
        snapshot, floor = medians_alternated(
            rounds,
            lambda: seal(master, "acme/shop", 2, read_store(store)),
            lambda: AESGCM(raw_key).encrypt(os.urandom(12), backup_image(store), None),
        )
        restore = best_of(rounds, lambda: write_store(restored, ring.open("acme/shop", sealed)))
    print(
        f"store {len(image) / 1024:8.0f} KiB | raw AES-GCM encrypt {raw_encrypt * 1e6:8.1f} us"
        f" | snapshot+encrypt {snapshot * 1e6:8.1f} us ({snapshot / raw_encrypt:5.1f}x)"
        f" | floor (backup + AES-GCM) {floor * 1e6:8.1f} us (snapshot {snapshot / floor:4.2f}x)"
        f" | raw decrypt {raw_decrypt * 1e6:8.1f} us"
        f" | decrypt+restore {restore * 1e6:8.1f} us ({restore / raw_decrypt:5.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="65536,1048576,8388608")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        measure(size, args.rounds)


if __name__ == "__main__":
    main()
