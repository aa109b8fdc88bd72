"""WebhookService end to end: a real gateway delivering to a real HTTP receiver on loopback.
Signatures verify with the `standardwebhooks` package; filters, tenants, order, retries,
failing and disabled webhooks, and a dead receiver that never holds up another webhook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from tests.conftest import RunningGateway, started_gateway
from tests.webhook_receiver import Received, Receiver
from tests.webhooks import FAST_WEBHOOKS, Webhooks, append_synced
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.schema import webhooks as webhooks_table
from zapgate.gateway.webhooks.timings import WebhookSettings
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import webhook_pb2 as pb

STATUS = epb.WebhookStatus


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGateway]:
    async with started_gateway(
        tmp_path_factory.mktemp("gateway"), webhooks=FAST_WEBHOOKS
    ) as gateway:
        yield gateway


def added(request: Received) -> int:
    return int(request.json()["contactsSynced"].get("added", 0))


async def test_deliveries_are_signed_in_order_and_verify(
    running: RunningGateway, tenant: str
) -> None:
    client = await Webhooks.for_tenant(running, tenant)
    async with Receiver() as receiver:
        webhook, secret = await client.create(receiver.url, description="orders")
        assert secret.startswith("whsec_")
        assert webhook.id.startswith("wh_")
        assert webhook.enabled
        for n in range(1, 21):
            await append_synced(running, tenant, "sales", n)
        accepted = await receiver.wait_accepted(20)
        verifier = Verifier(secret)
        cursors = []
        for request in accepted:
            payload = verifier.verify(request.body, request.headers)
            assert payload["instanceId"] == "sales"
            assert request.headers["webhook-id"] == f"evt_{payload['cursor']}"
            cursors.append(int(payload["cursor"]))
        assert [added(r) for r in accepted] == list(range(1, 21))
        assert cursors == sorted(cursors)
        assert len(set(cursors)) == 20
        # A body altered in transit does not verify.
        with pytest.raises(WebhookVerificationError):
            verifier.verify(accepted[0].body + b" ", accepted[0].headers)
        seen = await client.wait_for(webhook.id, lambda w: w.delivery.cursor == cursors[-1])
        assert seen.delivery.status == STATUS.WEBHOOK_STATUS_ACTIVE
        assert seen.delivery.lag_events == 0
        assert seen.delivery.HasField("last_success_time")


async def test_a_given_secret_is_used_and_the_secret_is_sealed_at_rest(
    running: RunningGateway, tenant: str
) -> None:
    client = await Webhooks.for_tenant(running, tenant)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    async with Receiver() as receiver:
        webhook, returned = await client.create(receiver.url, secret=secret)
        assert returned == secret
        await append_synced(running, tenant, "sales", 1)
        [request] = await receiver.wait_accepted(1)
        assert Verifier(secret).verify(request.body, request.headers)["contactsSynced"]
    engine = await open_database(running.database_url)
    try:
        async with engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(webhooks_table).where(webhooks_table.c.id == webhook.id)
                    )
                )
                .mappings()
                .one()
            )
    finally:
        await engine.dispose()
    stored = b"".join(bytes(v) for v in row.values() if isinstance(v, bytes | bytearray))
    assert secret.encode() not in stored
    assert secret.removeprefix("whsec_").encode() not in stored
    assert secret not in json.dumps([str(v) for v in row.values()])


async def test_filters_by_instance_and_type(running: RunningGateway, tenant: str) -> None:
    client = await Webhooks.for_tenant(running, tenant)
    async with Receiver() as receiver:
        await client.create(
            receiver.url,
            instance_ids=["sales"],
            types=[epb.EVENT_TYPE_CONTACTS_SYNCED],
        )
        events = running.gateway.runtime.events
        await events.append(tenant, "support", epb.ContactsSynced(added=99))  # other instance
        await events.append(tenant, "sales", epb.SendingPaused(reason="x"))  # other type
        await append_synced(running, tenant, "sales", 1)
        await append_synced(running, tenant, "support", 98)
        await append_synced(running, tenant, "sales", 2)
        await receiver.wait_accepted(2)
        await asyncio.sleep(0.3)  # a third delivery would have arrived by now
        assert [added(r) for r in receiver.accepted] == [1, 2]
        assert len(receiver.requests) == 2


async def test_tenants_are_isolated(running: RunningGateway, tenant: str) -> None:
    mine = await Webhooks.for_tenant(running, tenant)
    theirs = await Webhooks.for_tenant(running, tenant + "-b")
    async with Receiver() as receiver:
        webhook, _ = await mine.create(receiver.url)
        await append_synced(running, tenant + "-b", "sales", 7)  # the other tenant's event
        await append_synced(running, tenant, "sales", 1)
        await receiver.wait_accepted(1)
        await asyncio.sleep(0.3)
        assert [added(r) for r in receiver.accepted] == [1]
        for call in (
            theirs.get(webhook.id),
            theirs.update(pb.Webhook(id=webhook.id, enabled=False), "enabled"),
            theirs.stub.DeleteWebhook(
                pb.DeleteWebhookRequest(webhook_id=webhook.id), metadata=theirs.metadata
            ),
            theirs.stub.TestWebhook(
                pb.TestWebhookRequest(webhook_id=webhook.id), metadata=theirs.metadata
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await theirs.stub.ListWebhooks(pb.ListWebhooksRequest(), metadata=theirs.metadata)
        assert list(listed.webhooks) == []
        assert (await mine.get(webhook.id)).enabled


async def test_bad_input_is_invalid_argument_naming_the_field(
    running: RunningGateway, tenant: str
) -> None:
    client = await Webhooks.for_tenant(running, tenant)
    cases = {
        "webhook.url": dict(url="ftp://example.com/hook"),
        "webhook.instance_ids": dict(url="https://example.com", instance_ids=["Not Valid"]),
        "webhook.types": dict(url="https://example.com", types=[999]),
        "secret": dict(url="https://example.com", secret="not-a-secret"),
    }
    for field, fields in cases.items():
        secret = str(fields.pop("secret", ""))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.create(secret=secret, **fields)  # type: ignore[arg-type]
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(raised.value)  # type: ignore[arg-type]
        assert status is not None
        violations = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [v.field for v in bad.field_violations]
        assert violations == [field]


async def test_list_pages_update_and_delete(running: RunningGateway, tenant: str) -> None:
    client = await Webhooks.for_tenant(running, tenant)
    created = [(await client.create(f"https://example.com/{i}"))[0] for i in range(5)]
    ids, token = [], ""
    while True:
        page = await client.stub.ListWebhooks(
            pb.ListWebhooksRequest(page_size=2, page_token=token), metadata=client.metadata
        )
        ids += [w.id for w in page.webhooks]
        token = page.next_page_token
        if not token:
            break
    assert ids == sorted(w.id for w in created)
    changed = await client.update(
        pb.Webhook(
            id=created[0].id, url="https://example.org/new", format=pb.WEBHOOK_FORMAT_EVOLUTION
        ),
        "url",
        "format",
    )
    assert changed.url == "https://example.org/new"
    assert changed.format == pb.WEBHOOK_FORMAT_EVOLUTION
    disabled = await client.update(pb.Webhook(id=created[1].id, enabled=False), "enabled")
    assert not disabled.enabled
    assert disabled.delivery.status == STATUS.WEBHOOK_STATUS_DISABLED
    for webhook in created:
        reply = await client.stub.DeleteWebhook(
            pb.DeleteWebhookRequest(webhook_id=webhook.id), metadata=client.metadata
        )
        assert reply.deleted
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.get(created[0].id)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_test_webhook_reports_the_answer(running: RunningGateway, tenant: str) -> None:
    client = await Webhooks.for_tenant(running, tenant)

    async def teapot(_: Received) -> int:
        return 418

    async with Receiver(teapot) as receiver:
        webhook, secret = await client.create(receiver.url)
        reply = await client.stub.TestWebhook(
            pb.TestWebhookRequest(webhook_id=webhook.id), metadata=client.metadata
        )
        assert reply.status_code == 418
        assert reply.body_snippet == "not now"
        assert not reply.error
        [request] = receiver.requests
        assert Verifier(secret).verify(request.body, request.headers)["test"] is True
        assert request.headers["webhook-id"].startswith("test_")
        # Nothing about the webhook changed.
        assert (await client.get(webhook.id)).delivery.attempts == 0


async def test_a_receiver_down_then_back_gets_every_event_in_order(
    running: RunningGateway, tenant: str
) -> None:
    client = await Webhooks.for_tenant(running, tenant)
    down = True

    async def flaky(_: Received) -> int:
        return 503 if down else 200

    async with Receiver(flaky) as receiver:
        webhook, _ = await client.create(receiver.url)
        for n in range(1, 6):
            await append_synced(running, tenant, "sales", n)
        retrying = await client.wait_for(webhook.id, lambda w: w.delivery.attempts >= 3)
        assert retrying.delivery.status == STATUS.WEBHOOK_STATUS_RETRYING
        assert retrying.delivery.last_error.startswith("HTTP 503")
        assert retrying.delivery.HasField("failing_since")
        assert retrying.delivery.lag_events == 5
        # Every retry is the first event again, under the same webhook-id.
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
        down = False
        accepted = await receiver.wait_accepted(5)
        assert [added(r) for r in accepted] == [1, 2, 3, 4, 5]
        caught_up = await client.wait_for(webhook.id, lambda w: w.delivery.lag_events == 0)
        assert caught_up.delivery.status == STATUS.WEBHOOK_STATUS_ACTIVE
        assert caught_up.delivery.attempts == 0
        assert not caught_up.delivery.HasField("failing_since")


async def test_gone_disables_the_webhook_with_an_event(
    running: RunningGateway, tenant: str
) -> None:
    client = await Webhooks.for_tenant(running, tenant)

    async def gone(_: Received) -> int:
        return 410

    async with Receiver(gone) as receiver:
        webhook, _ = await client.create(receiver.url, types=[epb.EVENT_TYPE_CONTACTS_SYNCED])
        await append_synced(running, tenant, "sales", 1)
        stopped = await client.wait_for(webhook.id, lambda w: not w.enabled)
        assert stopped.delivery.status == STATUS.WEBHOOK_STATUS_DISABLED
        assert "410" in stopped.delivery.disabled_reason
        assert len(receiver.requests) == 1
    changes = await running.gateway.runtime.events.read(
        tenant, 0, [], [epb.EVENT_TYPE_WEBHOOK_STATUS_CHANGED], 10
    )
    assert [
        (e.webhook_status_changed.webhook_id, e.webhook_status_changed.status) for e in changes
    ] == [(webhook.id, STATUS.WEBHOOK_STATUS_DISABLED)]


async def test_a_dead_receiver_never_slows_another_webhook(
    running: RunningGateway, tenant: str
) -> None:
    client = await Webhooks.for_tenant(running, tenant)

    async def never(_: Received) -> None:
        return None

    async with Receiver(never) as dead, Receiver() as alive:
        stuck, _ = await client.create(dead.url)
        await client.create(alive.url)
        for n in range(1, 51):
            await append_synced(running, tenant, "sales", n)
        accepted = await alive.wait_accepted(50)
        assert [added(r) for r in accepted] == list(range(1, 51))
        # The dead receiver got its first event and holds it; nothing else went its way.
        assert len(dead.requests) == 1
        assert (await client.get(stuck.id)).delivery.lag_events == 50


async def test_failing_for_too_long_stops_and_enabling_resumes_from_the_cursor(
    tmp_path: Path, tenant: str
) -> None:
    settings = WebhookSettings(**{**FAST_WEBHOOKS.__dict__, "failing_after_seconds": 0.5})
    async with started_gateway(tmp_path, webhooks=settings) as running:
        client = await Webhooks.for_tenant(running, tenant)
        up = False

        async def flaky(_: Received) -> int:
            return 200 if up else 500

        async with Receiver(flaky) as receiver:
            webhook, _ = await client.create(receiver.url, types=[epb.EVENT_TYPE_CONTACTS_SYNCED])
            await append_synced(running, tenant, "sales", 1)
            await append_synced(running, tenant, "sales", 2)
            failing = await client.wait_for(webhook.id, lambda w: not w.enabled)
            assert failing.delivery.status == STATUS.WEBHOOK_STATUS_FAILING
            assert "HTTP 500" in failing.delivery.disabled_reason
            attempts = len(receiver.requests)
            assert attempts >= 2
            changes = await running.gateway.runtime.events.read(
                tenant, 0, [], [epb.EVENT_TYPE_WEBHOOK_STATUS_CHANGED], 10
            )
            assert [c.webhook_status_changed.status for c in changes] == [
                STATUS.WEBHOOK_STATUS_FAILING
            ]
            await append_synced(running, tenant, "sales", 3)  # while stopped
            await asyncio.sleep(0.3)
            assert len(receiver.requests) == attempts  # stopped means stopped
            up = True
            resumed = await client.update(pb.Webhook(id=webhook.id, enabled=True), "enabled")
            assert resumed.enabled
            assert resumed.delivery.attempts == 0
            accepted = await receiver.wait_accepted(3)
            assert [added(r) for r in accepted] == [1, 2, 3]


async def test_private_addresses_are_refused_unless_allowed(tmp_path: Path, tenant: str) -> None:
    async with started_gateway(tmp_path) as running, Receiver() as receiver:
        client = await Webhooks.for_tenant(running, tenant)
        webhook, _ = await client.create(receiver.url)
        reply = await client.stub.TestWebhook(
            pb.TestWebhookRequest(webhook_id=webhook.id), metadata=client.metadata
        )
        assert reply.status_code == 0
        assert "not a public address" in reply.error
        await append_synced(running, tenant, "sales", 1)
        refused = await client.wait_for(webhook.id, lambda w: w.delivery.attempts >= 1)
        assert "not a public address" in refused.delivery.last_error
        assert receiver.requests == []
