from __future__ import annotations

import gc
import importlib
import itertools
import os
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.postgres import create_database, find_bindir, running_server
from zapgate.gateway.config import ServeConfig
from zapgate.gateway.connections.backoff import Backoff
from zapgate.gateway.connections.session_keeper import KeeperTimings
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database
from zapgate.sessions.sim_engine import SimTimings

_database_numbers = itertools.count()


def _import_neonize_quietly() -> None:
    """neonize's import runs `os.popen("uname -a")` and never closes the pipe
    (neonize/utils/platform.py); the pipe is freed when `subprocess` next reaps finished
    children, i.e. whenever some later test starts a process. Import it once here and reap
    that child at once, so the ResourceWarning does not land on an unrelated test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        importlib.import_module("neonize")
        for _ in range(200):
            subprocess.run(["true"], check=True)  # each start reaps finished children
            gc.collect()
            if not subprocess._active:  # type: ignore[attr-defined]
                break
            time.sleep(0.01)


_import_neonize_quietly()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """An admin URL of a real PostgreSQL server. Under CI a missing server is a failure,
    on a developer machine a skip that says how to get one."""
    if url := os.environ.get("ZAPGATE_TEST_DATABASE_URL"):
        yield url
        return
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL not found: apt-get install postgresql, or set ZAPGATE_TEST_DATABASE_URL"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with running_server(bindir) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state store: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    admin_url = request.getfixturevalue("postgres_admin_url")
    return create_database(admin_url, f"zapgate_test_{os.getpid()}_{next(_database_numbers)}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"


@dataclass
class RunningGateway:
    gateway: Gateway
    channel: grpc.aio.Channel
    database_url: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    async def new_key(self, tenant: str) -> str:
        engine = await open_database(self.database_url)
        try:
            key, _ = await ApiKeyRepository(engine).create(tenant)
        finally:
            await engine.dispose()
        return key


# Fast simulator and reconnect timings, so flows finish in a fraction of a second.
FAST_SIM = SimTimings(
    qr_first_seconds=2.0,
    qr_next_seconds=1.0,
    connect_seconds=0.02,
    pair_code_seconds=5.0,
    keepalive_seconds=0.1,
)
FAST_BACKOFF = Backoff(base_seconds=0.05, cap_seconds=0.2, stable_after_seconds=60)
FAST_KEEPER = KeeperTimings(
    poll_seconds=0.05, debounce_seconds=0.05, max_delay_seconds=0.2, quiet_poll_seconds=0.05
)


def gateway_config(tmp_path: Path, database_url: str, **overrides: object) -> ServeConfig:
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "engine": "sim",
        "engine_workers": 1,
        "runtime_dir": tmp_path / "runtime",
        "sim_timings": FAST_SIM,
        "backoff": FAST_BACKOFF,
        "keeper_timings": FAST_KEEPER,
        "contacts_sync_delay_seconds": 0.0,
    }
    values.update(overrides)
    return ServeConfig(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def started_gateway(tmp_path: Path, **overrides: object) -> AsyncIterator[RunningGateway]:
    """A real gateway on 127.0.0.1:<free port> (simulator workers, fast timings, SQLite in
    `tmp_path`, or `database_url=`) and a gRPC channel to it."""
    url = str(overrides.pop("database_url", None) or f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    gateway = Gateway(gateway_config(tmp_path, url, **overrides))
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield RunningGateway(gateway, channel, url)
    finally:
        await channel.close()
        await gateway.stop(grace=1)


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGateway]:
    """A gateway shared by a test module (pyproject sets a module-wide event loop). Tests
    stay independent by each using a tenant of their own."""
    async with started_gateway(tmp_path_factory.mktemp("gateway")) as gateway:
        yield gateway


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)
