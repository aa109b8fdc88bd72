"""Webhook delivery throughput: W webhooks catching up on N events each, delivered by the
gateway (read from the log, signed, POSTed one at a time per webhook in cursor order, cursor
committed after each) to a local receiver, against a bare loop POSTing the same signed
bodies with the same HTTP client library (httpx) and the same concurrency (W requests in
flight), in the same run. Prints deliveries per second and the ratio (target >= 0.5).

    python bench/webhook_delivery.py [--webhooks 8] [--events 500]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf import field_mask_pb2

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.db import open_database
from zapgate.gateway.webhooks.payloads import proto_json
from zapgate.gateway.webhooks.poster import new_client
from zapgate.gateway.webhooks.signing import message_id, signed_headers
from zapgate.gateway.webhooks.signing_secret import secret_key
from zapgate.v1 import event_pb2, webhook_pb2, webhook_pb2_grpc

RECEIVER = """
import asyncio, uvloop
RESPONSE = b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok"
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
uvloop.run(main())
"""


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, f"http://127.0.0.1:{int(process.stdout.readline())}/hook"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--webhooks", type=int, default=8)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    w, n = args.webhooks, args.events
    receiver, url = start_receiver()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zapgate.gateway.cli",
                "serve",
                "--http-listen",
                "off",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data),
                "--runtime-dir",
                str(Path(tmp) / "runtime"),
                "--engine",
                "sim",
                "--engine-workers",
                "1",
                "--webhook-allow-private",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert gateway.stderr is not None
            port = 0
            for line in gateway.stderr:
                if "zapgate listening on" in line:
                    port = int(line.rsplit(":", 1)[1])
                    break
            threading_drain(gateway)
            key = (data / "initial-api-key").read_text().strip()
            metadata = (("authorization", f"Bearer {key}"),)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = webhook_pb2_grpc.WebhookServiceStub(channel)
                created = []
                for _ in range(w):
                    reply = await stub.CreateWebhook(
                        webhook_pb2.CreateWebhookRequest(webhook=webhook_pb2.Webhook(url=url)),
                        metadata=metadata,
                    )
                    created.append(reply)
                    await stub.UpdateWebhook(
                        webhook_pb2.UpdateWebhookRequest(
                            webhook=webhook_pb2.Webhook(id=reply.webhook.id, enabled=False),
                            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
                        ),
                        metadata=metadata,
                    )
                engine = await open_database(f"sqlite+aiosqlite:///{data / 'zapgate.db'}")
                log = EventLog(engine)
                for i in range(n):
                    await log.append("default", "bench", event_pb2.ContactsSynced(added=i))
                events = await log.read("default", 0, [], [event_pb2.EVENT_TYPE_CONTACTS_SYNCED], n)
                await engine.dispose()

                started = time.perf_counter()
                for reply in created:
                    await stub.UpdateWebhook(
                        webhook_pb2.UpdateWebhookRequest(
                            webhook=webhook_pb2.Webhook(id=reply.webhook.id, enabled=True),
                            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
                        ),
                        metadata=metadata,
                    )
                last = events[-1].cursor
                while True:
                    listed = await stub.ListWebhooks(
                        webhook_pb2.ListWebhooksRequest(), metadata=metadata
                    )
                    if all(h.delivery.cursor >= last for h in listed.webhooks):
                        break
                    await asyncio.sleep(0.02)
                gateway_seconds = time.perf_counter() - started
        finally:
            gateway.terminate()
            gateway.wait()

    # The bare loop: the same signed bodies, W workers with one request in flight each.
    key_bytes = secret_key(created[0].secret)
    assert key_bytes is not None
    bodies = [(message_id(e.cursor), proto_json(e)) for e in events]
    async with new_client(w, 10.0) as client:  # the gateway's own client settings

        async def worker() -> None:
            for mid, body in bodies:
                headers = signed_headers(key_bytes, mid, int(time.time()), body)
                response = await client.post(url, content=body, headers=headers)
                assert response.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(w)))
        bare_seconds = time.perf_counter() - started
    receiver.terminate()
    receiver.wait()

    total = w * n
    gateway_rate, bare_rate = total / gateway_seconds, total / bare_seconds
    print(f"{w} webhooks x {n} events = {total} deliveries")
    print(f"gateway:   {gateway_rate:8.0f} deliveries/s ({gateway_seconds:.2f} s)")
    print(f"bare loop: {bare_rate:8.0f} POSTs/s      ({bare_seconds:.2f} s)")
    print(f"ratio:     {gateway_rate / bare_rate:.2f} (target >= 0.5)")


def threading_drain(process: subprocess.Popen[str]) -> None:
    """Keeps reading the gateway's log so its pipe never fills."""
    import threading

    def drain() -> None:
        assert process.stderr is not None
        for _ in process.stderr:
            pass

    threading.Thread(target=drain, daemon=True).start()


if __name__ == "__main__":
    asyncio.run(main())
