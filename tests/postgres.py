"""A throwaway PostgreSQL server for the test session, started from the Debian packages'
binaries (or an existing server given by ZAPGATE_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg


def find_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(bindir: Path) -> Iterator[str]:
    """Starts a private cluster; yields an admin URL. PostgreSQL refuses to run as root, so
    as root the cluster runs as the `postgres` user the Debian package creates."""
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="zapgate-pg-"))
    if as_root:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, log = root / "data", root / "server.log"
    port = free_port()

    def run(*argv: str | Path, check: bool = True) -> None:
        # `runuser` changes user in a fresh process: the test process (with neonize's Go
        # runtime loaded) only vforks and execs, never setuids in a forked copy of itself.
        prefix: list[str | Path] = ["runuser", "-u", "postgres", "--"] if as_root else []
        command = [*prefix, *argv]
        done = subprocess.run(command, check=False, capture_output=True)
        if check and done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(
                f"{argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
                f"\n--- server.log ---\n{server_log}"
            )

    run(bindir / "initdb", "-D", data, "-U", "zapgate", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "start")
    try:
        yield f"postgresql://zapgate@127.0.0.1:{port}/postgres"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """Creates an empty database; returns its URL."""

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"
