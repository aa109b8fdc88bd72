"""Where SendMessage's server CPU goes, outside zapgate's handler: the same request through
(1) a bare grpc.aio unary echo of raw bytes, (2) zapgate's MessageService proto with a handler
that returns a canned response, (3) the same wrapped in one empty coroutine (the layer every
wrapped handler adds, nothing in it), (4) the same behind zapgate's authentication
(handlers.py, call_guard.py). CPU time per request of each server process, same client and
concurrency, in the same run, rounds alternated; each round starts fresh server processes.

Server processes differ from one another by ±30 µs per request on this machine (the same
code, measured twice in a row), so read the medians of several rounds, and every round's
value, before calling a difference real.

    python bench/enqueue_breakdown.py [--requests 8000] [--concurrency 64] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

import grpc.aio
from enqueue_throughput import ECHO_SERVER, cpu_seconds

from zapgate.gateway.rpc.auth_cache import CachedAuthenticator
from zapgate.gateway.rpc.call_guard import CallGuard
from zapgate.gateway.rpc.roles import Caller, Role
from zapgate.v1 import message_pb2 as pb

CANNED_SERVER = """
import asyncio, grpc, sys
from zapgate.v1 import message_pb2 as pb, message_pb2_grpc
from zapgate.gateway.rpc.handlers import registrar
from zapgate.gateway.rpc.call_guard import CallGuard
from zapgate.gateway.rpc.auth_cache import CachedAuthenticator
from zapgate.gateway.rpc.roles import Caller, Role
REPLY = pb.SendMessageResponse(message=pb.Message(id="msg-1", instance_id="bench", state=1))
class Canned(message_pb2_grpc.MessageServiceServicer):
    async def SendMessage(self, request, context):
        return REPLY
async def tenant_of(token):
    return Caller("bench", "bench", Role.SENDER, ("bench",))
def empty_layer(method, handler):
    inner = handler.unary_unary
    async def call(request, context):
        return await inner(request, context)
    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
async def main():
    wraps = {
        "plain": [],
        "layer": [empty_layer],
        "auth": [CallGuard(CachedAuthenticator(tenant_of)).wrap],
    }[sys.argv[1]]
    server = grpc.aio.server()
    message_pb2_grpc.add_MessageServiceServicer_to_server(Canned(), registrar(server, wraps))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
import uvloop; uvloop.run(main())
"""
REQUEST = pb.SendMessageRequest(
    instance_id="bench",
    phone="+5511999990000",
    text=pb.Text(body="Olá {name}, seu pedido {order} saiu para entrega."),
    variables={"name": "Ana", "order": "12345"},
)
METADATA = (("authorization", "Bearer zg_bench_key"),)
SCOPE_CALLS = 5000
COLD_CALLS = 300
COOLING_BYTES = 2 << 20  # touched between two cold calls: other work evicts a call's code and data


async def guard_scope_cost() -> tuple[float, float, float]:
    """CPU seconds of the call guard's work per call, on a real call's context: inside one
    call to an in-process server, its guarded handler (handlers.py's wrapper, the scope of
    call_guard.py around a handler that returns at once) is run SCOPE_CALLS times in a row
    (warm caches), then COLD_CALLS times with COOLING_BYTES of memory touched before each
    (as in a busy server, where grpc, the loop and other processes run between two calls),
    beside the bare handler cooled the same way (the baseline). Measured with the thread's
    CPU clock in one process, so other work on the machine barely moves it. Returns (warm,
    cold, cold baseline)."""
    guard = CallGuard(CachedAuthenticator(_bench_caller))
    method = "/zapgate.v1.MessageService/SendMessage"
    reply = pb.SendMessageResponse()

    async def canned(request: pb.SendMessageRequest, context: object) -> pb.SendMessageResponse:
        return reply

    guarded = guard.wrap(method, grpc.unary_unary_rpc_method_handler(canned)).unary_unary
    cooling = bytearray(COOLING_BYTES)
    costs: list[float] = []

    def cool() -> None:
        for offset in range(0, COOLING_BYTES, 64):  # one byte per cache line
            cooling[offset] ^= 1

    async def cold(handler: Any, request: Any, context: object) -> float:
        spent = 0
        for _ in range(COLD_CALLS):
            cool()
            start = time.thread_time_ns()
            await handler(request, context)
            spent += time.thread_time_ns() - start
        return spent / COLD_CALLS / 1e9

    async def timing(request: pb.SendMessageRequest, context: object) -> pb.SendMessageResponse:
        await guarded(request, context)  # the first call fills the key cache
        start = time.process_time()
        for _ in range(SCOPE_CALLS):
            await guarded(request, context)
        costs.append((time.process_time() - start) / SCOPE_CALLS)
        costs.append(await cold(guarded, request, context))
        costs.append(await cold(canned, request, context))
        return reply

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        timing,
        request_deserializer=pb.SendMessageRequest.FromString,
        response_serializer=pb.SendMessageResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "zapgate.v1.MessageService", {"SendMessage": handler}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.unary_unary(method)(REQUEST.SerializeToString(), metadata=METADATA)
    finally:
        await server.stop(None)
    warm, cold_guarded, cold_canned = costs
    return warm, cold_guarded, cold_canned


async def _bench_caller(token: str) -> Caller:
    return Caller("bench", "bench", Role.SENDER, ("bench",))


async def cpu_per_request(code: str, arg: str, requests: int, concurrency: int) -> float:
    server = subprocess.Popen([sys.executable, "-c", code, arg], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = (
                "/bench.Echo/Echo"
                if code is ECHO_SERVER
                else "/zapgate.v1.MessageService/SendMessage"
            )
            call = channel.unary_unary(method)
            body = REQUEST.SerializeToString()
            await call(body, metadata=METADATA)
            counter = iter(range(requests))

            async def caller() -> None:
                for _ in counter:
                    await call(body, metadata=METADATA)

            before = cpu_seconds(server.pid)
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            return (cpu_seconds(server.pid) - before) / requests
    finally:
        server.terminate()
        server.wait()


async def measure(requests: int, concurrency: int, rounds: int) -> None:
    servers = {
        "bare echo (raw bytes)": (ECHO_SERVER, ""),
        "MessageService proto, canned handler": (CANNED_SERVER, "plain"),
        "  + an empty wrapper coroutine": (CANNED_SERVER, "layer"),
        "  + zapgate's authentication": (CANNED_SERVER, "auth"),
    }
    costs: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(rounds):  # alternated, so noise hits every server alike
        for name, (code, arg) in servers.items():
            costs[name].append(await cpu_per_request(code, arg, requests, concurrency))
    for name, values in costs.items():
        rounds_us = ", ".join(f"{value * 1e6:.0f}" for value in values)
        print(
            f"{name:40} {statistics.median(values) * 1e6:6.0f} us CPU per request (median;"
            f" rounds {rounds_us})"
        )
    warm, cold, baseline = await guard_scope_cost()
    print(
        f"the guard's scope on a real call's context, in process: {warm * 1e6:.1f} us CPU per"
        f" call with warm caches; {cold * 1e6:.1f} us cooled, against {baseline * 1e6:.1f} us"
        " for the bare handler cooled alike"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(measure(args.requests, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
