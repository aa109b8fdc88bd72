"""`zapgate vault rotate-key` re-wraps webhook signing secrets like sessions: with the old
master key gone, a webhook still signs with the secret it was created with."""

from __future__ import annotations

from pathlib import Path

from standardwebhooks import Webhook as Verifier

from tests.conftest import started_gateway
from tests.server_process import zapgate
from tests.webhook_receiver import Received, Receiver
from tests.webhooks import FAST_WEBHOOKS, Webhooks, append_synced
from zapgate.gateway.connections.master_key import read_key_file

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_rotation_rewraps_webhook_secrets(tmp_path: Path, tenant: str) -> None:
    data_dir = tmp_path / "data"
    verifier = Verifier(SECRET)
    async with Receiver() as receiver:
        async with started_gateway(tmp_path, webhooks=FAST_WEBHOOKS) as running:
            database_url = running.database_url
            client = await Webhooks.for_tenant(running, tenant)
            webhook, _ = await client.create(receiver.url, secret=SECRET)
            await append_synced(running, tenant, "sales", 1)
            [first] = await receiver.wait_accepted(1)
            assert verifier.verify(first.body, first.headers)["contactsSynced"]["added"] == 1
        old = read_key_file(data_dir / "master.key")
        result = zapgate(
            "vault", "rotate-key", "--data-dir", str(data_dir), "--database-url", database_url
        )
        assert result.returncode == 0, result.stderr
        assert f"re-wrapped webhook secret 1/1: {tenant}/{webhook.id}" in result.stdout
        assert read_key_file(data_dir / "master.key").key_id != old.key_id
        (data_dir / "master.key.previous").unlink()  # the old key is gone for good
        async with started_gateway(tmp_path, webhooks=FAST_WEBHOOKS) as running:
            client = await Webhooks.for_tenant(running, tenant)
            await append_synced(running, tenant, "sales", 2)

            # At-least-once: the first event may come again (the first gateway can stop between
            # the receiver's 2xx and reading it); each delivery verifies with the old secret.
            def added(request: Received) -> int:
                return int(
                    verifier.verify(request.body, request.headers)["contactsSynced"]["added"]
                )

            await receiver.wait_until(lambda: any(added(r) == 2 for r in receiver.accepted))
            assert {added(r) for r in receiver.accepted} == {1, 2}
            again = await client.get(webhook.id)
            assert again.enabled
            assert again.delivery.last_error == ""
