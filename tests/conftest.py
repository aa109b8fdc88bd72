from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.postgres import create_database, find_bindir, running_server
from zapgate.gateway.config import ServeConfig
from zapgate.gateway.server import Gateway
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import open_database

_database_numbers = itertools.count()


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


@pytest.fixture
async def running(tmp_path: Path, sqlite_url: str) -> AsyncIterator[RunningGateway]:
    """A real gateway on 127.0.0.1:<free port> with a gRPC channel to it."""
    gateway = Gateway(
        ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data", database_url=sqlite_url)
    )
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield RunningGateway(gateway, channel, sqlite_url)
    finally:
        await channel.close()
        await gateway.stop(grace=1)


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)
