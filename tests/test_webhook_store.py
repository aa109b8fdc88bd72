"""The webhook store and deliveries on SQLite and a real PostgreSQL server: the repository's
configuration and delivery columns, a status change with its event in one transaction, a
re-wrapped secret, and a gateway delivering from the log end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook as Verifier

from tests.conftest import started_gateway
from tests.webhook_receiver import Receiver
from tests.webhooks import FAST_WEBHOOKS, Webhooks, append_synced
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.webhooks import (
    ACTIVE,
    FAILING,
    RETRYING,
    Failure,
    WebhookRecord,
    WebhookRepository,
)
from zapgate.gateway.webhooks.signing_secret import (
    generate_secret,
    open_secret,
    rewrap_secret,
    seal_secret,
)
from zapgate.sessions.vault import Keyring, MasterKey
from zapgate.v1 import event_pb2 as epb

SECRET = generate_secret()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    yield engine
    await engine.dispose()


def new_webhook(keyring: Keyring, webhook_id: str, **fields: object) -> WebhookRecord:
    sealed = seal_secret(keyring, "acme", webhook_id, SECRET)
    return WebhookRecord("acme", webhook_id, "http://127.0.0.1:9/hook", sealed, **fields)  # type: ignore[arg-type]


async def test_configuration_lag_and_delivery_state(engine: AsyncEngine) -> None:
    keyring = Keyring(MasterKey.generate())
    repository = WebhookRepository(engine)
    events = EventLog(engine)
    await events.append("acme", "sales", epb.ContactsSynced(added=1))
    created = await repository.create(
        new_webhook(
            keyring, "wh_a", instance_ids=("sales",), types=(epb.EVENT_TYPE_CONTACTS_SYNCED,)
        )
    )
    assert created.cursor == await events.last_cursor()  # starts after what is logged
    for n in range(2, 5):
        await events.append("acme", "sales", epb.ContactsSynced(added=n))
    await events.append("acme", "support", epb.ContactsSynced(added=9))  # filtered out
    got = await repository.get("acme", "wh_a", lag=True)
    assert got is not None
    assert (got.instance_ids, got.types, got.lag_events) == (
        ("sales",),
        (epb.EVENT_TYPE_CONTACTS_SYNCED,),
        3,
    )
    assert open_secret(keyring, "acme", "wh_a", got.secret) == SECRET
    assert await repository.get("other", "wh_a") is None  # tenants never see each other's

    batch = await events.read("acme", got.cursor, got.instance_ids, got.types, 10)
    assert [e.contacts_synced.added for e in batch] == [2, 3, 4]
    failure = Failure("HTTP 500", 2, 123, 100)
    assert await repository.failed("acme", "wh_a", failure)
    retrying = await repository.get("acme", "wh_a")
    assert retrying is not None
    assert (retrying.status, retrying.attempts, retrying.last_error) == (RETRYING, 2, "HTTP 500")
    assert await repository.delivered("acme", "wh_a", batch[-1].cursor)
    done = await repository.get("acme", "wh_a", lag=True)
    assert done is not None
    assert (done.status, done.attempts, done.cursor, done.lag_events) == (
        ACTIVE,
        0,
        batch[-1].cursor,
        0,
    )

    status_row = events.row("acme", "", epb.WebhookStatusChanged(webhook_id="wh_a", status=FAILING))
    assert await repository.stop("acme", "wh_a", FAILING, "down", status_row)
    assert not await repository.delivered("acme", "wh_a", batch[-1].cursor + 1)  # stopped
    [logged] = await events.read(
        "acme", batch[-1].cursor, (), (epb.EVENT_TYPE_WEBHOOK_STATUS_CHANGED,), 10
    )
    assert logged.webhook_status_changed.status == FAILING
    resumed = await repository.update("acme", "wh_a", {"status": ACTIVE, "description": "x"})
    assert resumed is not None
    assert (resumed.status, resumed.disabled_reason, resumed.description) == (ACTIVE, "", "x")
    assert await repository.delete("acme", "wh_a")
    assert await repository.get("acme", "wh_a") is None


async def test_a_secret_rewrapped_under_a_new_key_opens_without_the_old(
    engine: AsyncEngine,
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    repository = WebhookRepository(engine)
    await repository.create(new_webhook(Keyring(old), "wh_b"))
    assert await repository.secret_keys() == [("acme", "wh_b", old.key_id)]
    stored = await repository.get("acme", "wh_b")
    assert stored is not None
    rewrapped = rewrap_secret(Keyring(new, [old]), "acme", "wh_b", stored.secret)
    assert await repository.replace_secret_wrapping("acme", "wh_b", rewrapped)
    assert await repository.secret_keys() == [("acme", "wh_b", new.key_id)]
    after = await repository.get("acme", "wh_b")
    assert after is not None
    assert open_secret(Keyring(new), "acme", "wh_b", after.secret) == SECRET


async def test_a_gateway_delivers_from_the_log(
    tmp_path: Path, database_url: str, tenant: str
) -> None:
    async with (
        started_gateway(tmp_path, database_url=database_url, webhooks=FAST_WEBHOOKS) as running,
        Receiver() as receiver,
    ):
        client = await Webhooks.for_tenant(running, tenant)
        webhook, secret = await client.create(receiver.url)
        for n in range(1, 6):
            await append_synced(running, tenant, "sales", n)
        accepted = await receiver.wait_accepted(5)
        verifier = Verifier(secret)
        payloads = [verifier.verify(r.body, r.headers) for r in accepted]
        assert [p["contactsSynced"]["added"] for p in payloads] == [1, 2, 3, 4, 5]
        last = int(payloads[-1]["cursor"])
        done = await client.wait_for(webhook.id, lambda w: w.delivery.cursor == last)
        assert done.delivery.lag_events == 0
        # Pausing a caught-up (idle) webhook ends its loop: the call returns.
        done.enabled = False
        paused = await client.update(done, "enabled")
        assert paused.delivery.status == epb.WEBHOOK_STATUS_DISABLED
        assert not paused.enabled
