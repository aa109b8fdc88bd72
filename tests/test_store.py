"""The state store, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.rpc.errors import InstanceAlreadyExists, InstanceNotFound
from zapgate.gateway.rpc.roles import Caller, Role
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import migrate, open_database
from zapgate.gateway.store.instances import InstanceRecord, InstanceRepository
from zapgate.gateway.store.schema import metadata
from zapgate.v1 import instance_pb2

DISCONNECTED = instance_pb2.INSTANCE_STATE_DISCONNECTED
CONNECTED = instance_pb2.INSTANCE_STATE_CONNECTED


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    yield engine
    await engine.dispose()


def record(instance_id: str, tenant: str = "acme", **fields: object) -> InstanceRecord:
    values: dict[str, object] = {"display_name": instance_id, "phone": "", "state": DISCONNECTED}
    values.update(fields)
    return InstanceRecord(tenant=tenant, id=instance_id, **values)  # type: ignore[arg-type]


async def test_migrations_produce_exactly_the_declared_schema(engine: AsyncEngine) -> None:
    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(connection)  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_migrating_twice_is_a_no_op(engine: AsyncEngine) -> None:
    repo = InstanceRepository(engine)
    await repo.create(record("kept"))
    await migrate(engine)
    assert await repo.get("acme", "kept") is not None


async def test_create_get_update_delete(engine: AsyncEngine) -> None:
    clock = FakeClock()
    repo = InstanceRepository(engine, clock)
    created, was_new = await repo.create(record("shop", labels={"team": "sales"}))
    assert was_new
    assert created.create_time_us == created.update_time_us == clock.now
    assert await repo.get("acme", "shop") == created

    updated = await repo.update("acme", "shop", {"display_name": "Shop", "phone": "+15550001111"})
    assert (updated.display_name, updated.phone, dict(updated.labels)) == (
        "Shop",
        "+15550001111",
        {"team": "sales"},
    )
    assert updated.update_time_us > created.update_time_us
    assert updated.create_time_us == created.create_time_us

    assert await repo.delete("acme", "shop")
    assert await repo.get("acme", "shop") is None
    assert not await repo.delete("acme", "shop")


async def test_identical_create_returns_existing_and_different_conflicts(
    engine: AsyncEngine,
) -> None:
    repo = InstanceRepository(engine, FakeClock())
    first, _ = await repo.create(record("a", phone="+15550001111"))
    again, was_new = await repo.create(record("a", phone="+15550001111"))
    assert (again, was_new) == (first, False)
    with pytest.raises(InstanceAlreadyExists):
        await repo.create(record("a", phone="+15550002222"))


async def test_tenants_are_isolated(engine: AsyncEngine) -> None:
    repo = InstanceRepository(engine)
    await repo.create(record("same-id", tenant="a", display_name="A's"))
    created, was_new = await repo.create(record("same-id", tenant="b", display_name="B's"))
    assert was_new
    assert (await repo.require("a", "same-id")).display_name == "A's"
    assert [r.id for r in await repo.list_page("c", state=None, after_id="", limit=10)] == []
    with pytest.raises(InstanceNotFound):
        await repo.update("c", "same-id", {"display_name": "stolen"})
    assert not await repo.delete("c", "same-id")
    assert created.tenant == "b"


async def test_keyset_paging_and_state_filter(engine: AsyncEngine) -> None:
    repo = InstanceRepository(engine)
    for n in range(7):
        await repo.create(record(f"i{n}"))
    await repo.update("acme", "i3", {"state": CONNECTED})
    page = await repo.list_page("acme", state=None, after_id="i1", limit=3)
    assert [r.id for r in page] == ["i2", "i3", "i4"]
    connected = await repo.list_page("acme", state=CONNECTED, after_id="", limit=10)
    assert [r.id for r in connected] == ["i3"]


async def test_api_keys_hashed_authenticated_and_revoked(engine: AsyncEngine) -> None:
    keys = ApiKeyRepository(engine)
    key, info = await keys.create("acme", "ci")
    key_id, secret = key.split("_")[1:]
    assert await keys.authenticate(key) == Caller("acme", key_id, Role.ADMIN)
    assert key_id == info.key_id
    assert await keys.authenticate(f"zg_{key_id}_wrong") is None
    assert await keys.authenticate("not-a-key") is None
    async with engine.connect() as conn:
        dump = repr((await conn.exec_driver_sql("SELECT * FROM api_keys")).all())
    assert secret not in dump

    assert await keys.revoke(key_id)
    assert await keys.authenticate(key) is None
    assert not await keys.revoke(key_id)
    listed = await keys.list("acme")
    assert [(k.key_id, k.revoked) for k in listed] == [(key_id, True)]
    assert await keys.count() == 1


async def test_api_keys_keep_their_role_and_scope(engine: AsyncEngine) -> None:
    keys = ApiKeyRepository(engine)
    key, info = await keys.create("acme", "front end", Role.SENDER, ["shop", "desk", "shop"])
    assert info.scope == ("desk", "shop")
    assert await keys.authenticate(key) == Caller("acme", info.key_id, Role.SENDER, info.scope)
    assert await keys.get("acme", info.key_id) == info
    assert await keys.get("other", info.key_id) is None
    assert not await keys.revoke(info.key_id, tenant="other")
    assert await keys.revoke(info.key_id, tenant="acme")
    assert await keys.list_page("acme", after_id="", limit=10, include_revoked=False) == []
    [revoked] = await keys.list_page("acme", after_id="", limit=10, include_revoked=True)
    assert (revoked.role, revoked.scope, revoked.revoked) == (Role.SENDER, info.scope, True)
