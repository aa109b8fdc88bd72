"""The data directory: created private (0700). What is in it (the SQLite store, the master
key, the first API key) must not be readable by other users."""

from __future__ import annotations

from pathlib import Path


def prepare_data_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
