"""Event stream fan-out: N events replayed to 100 subscribers at once from the durable log,
against a bare grpc.aio server stream sending the same serialized events to 100 clients, in
the same run; and the gateway's memory with 1,000 idle subscribers.

    python bench/event_fanout.py [--events 2000] [--subscribers 100] [--idle 1000]
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

sys.path.insert(0, str(Path(__file__).parent))
from enqueue_throughput import start_gateway

from zapgate.v1 import (
    event_pb2,
    event_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
)

BARE_STREAM = """
import asyncio, sys, grpc
events = [bytes.fromhex(line) for line in sys.stdin.read().split()]
async def stream(request, context):
    for event in events:
        yield event
async def main():
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(stream)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", {"Stream": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
import uvloop; uvloop.run(main())
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def fan_out(make_stream, subscribers: int, events: int) -> float:  # type: ignore[no-untyped-def]
    async def one() -> None:
        received = 0
        stream = make_stream()
        async for _ in stream:
            received += 1
            if received == events:
                stream.cancel()
                return

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(subscribers)))
    return subscribers * events / (time.perf_counter() - start)


async def measure(events: int, subscribers: int, idle: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gateway, port, key = start_gateway(Path(tmp))
        metadata = (("authorization", f"Bearer {key}"),)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await instance_pb2_grpc.InstanceServiceStub(channel).CreateInstance(
                    instance_pb2.CreateInstanceRequest(instance_id="fan"), metadata=metadata
                )
                send = message_pb2_grpc.MessageServiceStub(channel)
                request = message_pb2.SendMessageRequest(
                    instance_id="fan", phone="+5511999990000", text=message_pb2.Text(body="hi")
                )
                for n in range(0, events, 100):  # each queued message is one event
                    await asyncio.gather(
                        *(
                            send.SendMessage(request, metadata=metadata)
                            for _ in range(min(100, events - n))
                        )
                    )
                stub = event_pb2_grpc.EventServiceStub(channel)
                sample = []
                async for response in stub.Subscribe(
                    event_pb2.SubscribeRequest(instance_ids=["fan"]), metadata=metadata
                ):
                    sample.append(response.SerializeToString())
                    if len(sample) == events:
                        break
                gateway_rate = await fan_out(
                    lambda: stub.Subscribe(
                        event_pb2.SubscribeRequest(instance_ids=["fan"]), metadata=metadata
                    ),
                    subscribers,
                    events,
                )
                before = rss_kib(gateway.pid)
                idle_streams = [
                    stub.Subscribe(event_pb2.SubscribeRequest(only_new=True), metadata=metadata)
                    for _ in range(idle)
                ]
                waiters = [asyncio.ensure_future(s.read()) for s in idle_streams]
                await asyncio.sleep(3)
                after = rss_kib(gateway.pid)
                for s, w in zip(idle_streams, waiters, strict=True):
                    s.cancel()
                    w.cancel()
        finally:
            gateway.terminate()
            gateway.wait()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_STREAM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert bare.stdin is not None
        assert bare.stdout is not None
        bare.stdin.write("\n".join(s.hex() for s in sample))
        bare.stdin.close()
        bare_port = int(bare.stdout.readline())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bare_port}") as channel:
                call = channel.unary_stream("/bench.Bare/Stream")
                bare_rate = await fan_out(lambda: call(b""), subscribers, events)
        finally:
            bare.terminate()
            bare.wait()
    print(
        f"{events} events to {subscribers} subscribers: durable log {gateway_rate:,.0f} "
        f"deliveries/s; bare grpc.aio stream {bare_rate:,.0f}/s; ratio "
        f"{gateway_rate / bare_rate:.2f}"
    )
    print(
        f"{idle} idle subscribers: gateway RSS +{(after - before) / 1024:.1f} MiB "
        f"({(after - before) / idle:.1f} KiB each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(measure(args.events, args.subscribers, args.idle))


if __name__ == "__main__":
    main()
