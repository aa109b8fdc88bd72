"""Durable enqueue throughput of MessageService.SendMessage (committed to the outbox before it
returns) against a bare grpc.aio unary echo server receiving the same payload, with the same
client concurrency, in the same run. Servers run in their own processes; SQLite state store,
or the PostgreSQL database given (it must be empty; the gateway migrates it).

    python bench/enqueue_throughput.py [--requests 4000] [--concurrency 64] [--rounds 3]
                                       [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import grpc.aio

from zapgate.v1 import instance_pb2, instance_pb2_grpc, message_pb2, message_pb2_grpc

ECHO_SERVER = """
import asyncio, grpc, sys
async def main():
    server = grpc.aio.server()
    echo = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": echo}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
async def _echo(request, context):
    return request
import uvloop; uvloop.run(main())
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (less noisy than wall time on a shared box)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(call: Callable[[int], Awaitable[object]], requests: int, concurrency: int) -> float:
    """Requests per second with `concurrency` callers."""
    counter = iter(range(requests))

    async def caller() -> None:
        for n in counter:
            await call(n)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


def start_gateway(tmp: Path, database_url: str | None) -> tuple[subprocess.Popen[str], int, str]:
    data = tmp / "data"
    database = ["--database-url", database_url] if database_url else []
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zapgate.gateway.cli",
            "serve",
            "--http-listen",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--engine",
            "sim",
            "--engine-workers",
            "1",
            "--data-dir",
            str(data),
            "--runtime-dir",
            str(tmp / "runtime"),
            "--log-level",
            "INFO",
            *database,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if match := re.search(r"listening on [\d.]+:(\d+)", line):
            break
    else:
        raise RuntimeError("gateway did not start")
    # Keep reading its log, or a full pipe would stall the gateway.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    key = (data / "initial-api-key").read_text().strip()
    return process, int(match.group(1)), key


async def count_messages(tmp: Path, database_url: str | None) -> int:
    if database_url is None:
        with sqlite3.connect(tmp / "data" / "zapgate.db") as db:
            return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM messages"))
    finally:
        await conn.close()


async def measure(requests: int, concurrency: int, rounds: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        echo = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True
        )
        assert echo.stdout is not None
        echo_port = int(echo.stdout.readline())
        gateway, port, key = start_gateway(Path(tmp), database_url)
        try:
            metadata = (("authorization", f"Bearer {key}"),)
            payload = message_pb2.SendMessageRequest(
                instance_id="bench",
                phone="+5511999990000",
                text=message_pb2.Text(body="Olá {name}, seu pedido {order} saiu para entrega."),
                variables={"name": "Ana", "order": "12345"},
            )
            body = payload.SerializeToString()
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as echo_channel,
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            ):
                echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
                instances = instance_pb2_grpc.InstanceServiceStub(channel)
                await instances.CreateInstance(
                    instance_pb2.CreateInstanceRequest(instance_id="bench"), metadata=metadata
                )
                stub = message_pb2_grpc.MessageServiceStub(channel)

                async def send(n: int) -> object:
                    return await stub.SendMessage(payload, metadata=metadata)

                # Warm-up, not counted: both servers reach their steady state first.
                await rate_and_cpu(echo.pid, lambda n: echo_call(body), requests, concurrency)
                await rate_and_cpu(gateway.pid, send, requests, concurrency)
                results = []
                # Alternated rounds: a burst of noise on this shared machine hits one round,
                # not one side of every comparison.
                for _ in range(rounds):
                    results.append(
                        (
                            await rate_and_cpu(
                                echo.pid, lambda n: echo_call(body), requests, concurrency
                            ),
                            await rate_and_cpu(gateway.pid, send, requests, concurrency),
                        )
                    )
            stored = await count_messages(Path(tmp), database_url)
        finally:
            gateway.terminate()
            echo.terminate()
            gateway.wait()
            echo.wait()
    print(
        f"{'PostgreSQL' if database_url else 'SQLite'}, {requests} requests x {rounds} rounds, "
        f"{concurrency} callers, {os.cpu_count()} cores"
    )
    for n, ((echo_rate, echo_cpu), (send_rate, send_cpu)) in enumerate(results, 1):
        print(
            f"round {n}: bare echo {echo_rate:,.0f} req/s; SendMessage (durable) "
            f"{send_rate:,.0f} req/s; ratio {send_rate / echo_rate:.2f}; server CPU per "
            f"request {echo_cpu * 1e6:,.0f} us vs {send_cpu * 1e6:,.0f} us (gateway process, "
            "threads included)"
        )
    ratios = [send[0] / echo_[0] for echo_, send in results]
    # The same comparison by server CPU per request: less moved by other work on the machine.
    cpu_ratios = [echo_[1] / send[1] for echo_, send in results]
    print(
        f"median ratio {statistics.median(ratios):.2f}; median CPU ratio (echo / SendMessage) "
        f"{statistics.median(cpu_ratios):.2f}; rows committed {stored}"
    )
    assert stored == requests * (rounds + 1)


async def rate_and_cpu(
    pid: int, call: Callable[[int], Awaitable[object]], requests: int, concurrency: int
) -> tuple[float, float]:
    """Requests per second, and the server's CPU seconds per request."""
    before = cpu_seconds(pid)
    rate = await drive(call, requests, concurrency)
    return rate, (cpu_seconds(pid) - before) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    asyncio.run(measure(args.requests, args.concurrency, args.rounds, args.database_url))


if __name__ == "__main__":
    main()
