"""The chaos test: kill -9 of the core and of engine workers, over and over, under a steady
stream of sends, receipts and inbound messages, with a subscriber resuming by cursor.

Afterwards: no message lost or sent twice, every message and instance state has its event,
the subscriber saw every event once and in cursor order (checked against a full replay), no
instance ever needed a QR again, and every acknowledged inbound message became exactly one
`message_received` event.

CI runs a short version (`SHORT`); the full one (20 instances, 10 core kills, 10 worker
kills, on SQLite and PostgreSQL) prints its figures:

    ZAPGATE_CHAOS=full .venv/bin/pytest tests/test_chaos.py -s
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import random
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import grpc.aio
import sqlalchemy as sa

from tests.chaos_checks import (
    CUT,
    FINAL,
    IS,
    QUICK_NODE_FLAGS,
    SENT,
    WAIT,
    R,
    S,
    Seen,
    check_inbound,
    check_message_events,
    check_messages,
    check_no_qr_after,
    check_subscriber,
    last_states,
    replay,
    subscribe,
)
from tests.messaging import STREAM_POLICY, Messenger
from tests.processes import child_pids
from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from tests.test_sessions_at_rest import SERVER_FLAGS
from zapgate.gateway.store.apikeys import ApiKeyRepository
from zapgate.gateway.store.db import create_engine, open_database
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

T = TypeVar("T")
CHAOS_FLAGS = (*SERVER_FLAGS, *QUICK_NODE_FLAGS)


@dataclasses.dataclass(frozen=True)
class Size:
    instances: int
    core_kills: int
    worker_kills: int
    per_round: int  # messages accepted between two kills


SHORT = Size(instances=5, core_kills=2, worker_kills=2, per_round=15)
FULL = Size(instances=20, core_kills=10, worker_kills=10, per_round=40)


def chosen_size() -> Size:
    return FULL if os.environ.get("ZAPGATE_CHAOS") == "full" else SHORT


class Cluster:
    """The core as a child process, restarted on the same data dir, runtime dir and
    database after each kill; clients always use the current one."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.database_url = database_url
        self.flags = (*CHAOS_FLAGS, "--database-url", database_url)
        self.generation = 0
        self.up = asyncio.Event()
        self.server: ServerProcess | None = None
        self.channel: grpc.aio.Channel | None = None
        self.key = ""
        self.old_channels: list[grpc.aio.Channel] = []

    async def start(self) -> None:
        self.server = await asyncio.to_thread(ServerProcess, self.data_dir, *self.flags)
        self.channel = grpc.aio.insecure_channel(self.server.address)
        self.generation += 1
        self.up.set()

    async def kill_core(self) -> None:
        assert self.server is not None
        assert self.channel is not None
        self.up.clear()
        self.server.process.kill()
        await asyncio.to_thread(self.server.wait)
        # The old channel stays open: calls on it fail UNAVAILABLE by themselves (closing it
        # would cancel them locally, which grpc.aio may raise as CancelledError).
        self.old_channels.append(self.channel)
        self._save_log()

    def _save_log(self) -> None:
        assert self.server is not None
        self.server.close()
        lines = list(self.server.log)
        while not self.server.lines.empty():
            lines.append(self.server.lines.get())
        (self.tmp_path / f"core-{self.generation}.log").write_text("".join(lines))

    async def close(self) -> None:
        for channel in [*self.old_channels, self.channel]:
            if channel is not None:
                await channel.close(None)
        if self.server is not None:
            self._save_log()

    def workers(self) -> list[int]:
        """Pids of the core's engine workers (its children running zapgate.sessions.worker)."""
        assert self.server is not None
        found = []
        for pid in child_pids(self.server.process.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"zapgate.sessions.worker" in cmdline:
                found.append(pid)
        return sorted(found)

    def client(self) -> SimClient:
        assert self.channel is not None
        return SimClient(self.channel, self.key)

    async def call(self, what: Callable[[SimClient], Awaitable[T]]) -> T:
        """Runs a call on the current core; a call cut by a kill is retried on the next."""
        deadline = time.monotonic() + WAIT
        while True:
            await asyncio.wait_for(self.up.wait(), WAIT)
            try:
                return await what(self.client())
            except grpc.aio.AioRpcError as error:
                if error.code() not in CUT or time.monotonic() > deadline:
                    raise
            except grpc.aio.UsageError:
                pass  # the channel was closed by a kill as the call started
            await asyncio.sleep(0.05)


async def current(cluster: Cluster) -> SimClient:
    """A client of the core running now (waiting for its restart after a kill)."""
    await cluster.up.wait()
    return cluster.client()


@dataclasses.dataclass
class Traffic:
    instances: list[str]
    sent: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # text -> ids
    injected: dict[str, str] = dataclasses.field(default_factory=dict)  # message id -> inst
    unacknowledged: set[str] = dataclasses.field(default_factory=set)
    retries: int = 0
    acked_at: dict[str, float] = dataclasses.field(default_factory=dict)
    kills: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


async def send_forever(cluster: Cluster, traffic: Traffic, rng: random.Random) -> None:
    """One message after another, each with a unique text and idempotency key; a call cut by
    a kill is retried with the same key until it is accepted."""
    number = 0
    while not traffic.stop.is_set():
        instance_id = traffic.instances[number % len(traffic.instances)]
        text = f"chaos message {number}"
        request = mpb.SendMessageRequest(
            instance_id=instance_id,
            phone=f"+55119700{number % len(traffic.instances):02d}{rng.randrange(5):02d}",
            text=mpb.Text(body=text),
            idempotency_key=f"chaos-{number}",
        )
        attempts = 0

        async def send(client: SimClient, request: mpb.SendMessageRequest = request) -> str:
            nonlocal attempts
            attempts += 1
            reply = await Messenger(client).stub.SendMessage(
                request, metadata=client.metadata, timeout=10
            )
            return reply.message.id

        traffic.sent[text] = (instance_id, await cluster.call(send))
        traffic.retries += attempts - 1
        number += 1
        await asyncio.sleep(rng.uniform(0.0, 0.03))


async def inject_forever(cluster: Cluster, traffic: Traffic, rng: random.Random) -> None:
    """Inbound messages from the contacts' phones; one the gateway acknowledged must become
    exactly one event, one cut by a kill at most one."""
    number = 0
    while not traffic.stop.is_set():
        await cluster.up.wait()
        instance_id = traffic.instances[number % len(traffic.instances)]
        message_id = f"CHAOSIN{number:06d}"
        request = spb.InjectIncomingMessageRequest(
            instance_id=instance_id,
            from_phone=f"+55119800{number % 100:04d}",
            push_name="Chaos",
            text=f"inbound {number}",
            message_id=message_id,
        )
        client = cluster.client()
        try:
            await client.sim.InjectIncomingMessage(request, metadata=client.metadata, timeout=10)
            traffic.injected[message_id] = instance_id
            traffic.acked_at[message_id] = time.monotonic()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError):
            traffic.unacknowledged.add(message_id)
        number += 1
        await asyncio.sleep(rng.uniform(0.02, 0.08))


async def wait_recovered(
    cluster: Cluster, seen: Seen, traffic: Traffic, after_cursor: int, every_instance: bool
) -> None:
    """Until each instance's last StateChanged is CONNECTED (and, after a core kill, each
    has moved since `after_cursor`)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for task in traffic.tasks:
            if task.done():  # the subscriber, a sender or an injector stopped: say why
                task.result()
                raise AssertionError(f"{task.get_name()} ended")
        later = [e for e in seen.events if e.cursor > after_cursor]
        moved = {e.instance_id for e in later if e.HasField("state_changed")}
        last = last_states(seen.events)
        connected = all(
            i in last and last[i].state == IS.INSTANCE_STATE_CONNECTED for i in traffic.instances
        )
        if connected and (not every_instance or moved >= set(traffic.instances)):
            return
        await asyncio.sleep(0.05)
    summary = {i: (IS.Name(s.state), R.Name(s.reason)) for i, s in last.items()}
    raise AssertionError(
        f"instances did not come back after cursor {after_cursor}: last states {summary}, "
        f"moved since: {sorted(moved)}"
    )


async def count_rows(database_url: str, table: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(sa.text(f"SELECT count(*) FROM {table}"))
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def run_chaos(tmp_path: Path, database_url: str, size: Size, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    print(f"chaos seed {seed}: {size}")
    cluster = Cluster(tmp_path, database_url)
    engine = await open_database(database_url)
    try:
        cluster.key = (await ApiKeyRepository(engine).create("chaos"))[0]
    finally:
        await engine.dispose()
    await cluster.start()
    seen = Seen()
    instances = [f"chaos-{n:02d}" for n in range(size.instances)]
    traffic = Traffic(instances)
    tasks = traffic.tasks
    recoveries: list[float] = []
    kills = ["core"] * size.core_kills + ["worker"] * size.worker_kills
    rng.shuffle(kills)
    try:
        messenger = Messenger(cluster.client())
        for n, instance_id in enumerate(instances):
            await messenger.client.create(instance_id)
            await messenger.set_policy(instance_id, STREAM_POLICY)
            result = await messenger.client.pair(instance_id, f"+5511960000{n:03d}")
            assert result.instance.state == IS.INSTANCE_STATE_CONNECTED
        for _ in range(int(WAIT / 0.05)):  # every session is in the store before any kill
            if await count_rows(database_url, "session_snapshots") >= size.instances:
                break
            await asyncio.sleep(0.05)
        tasks.append(asyncio.create_task(subscribe(lambda: current(cluster), seen)))
        await wait_recovered(cluster, seen, traffic, 0, every_instance=False)
        paired_cursor = seen.last_cursor
        tasks.append(asyncio.create_task(send_forever(cluster, traffic, rng)))
        tasks.append(asyncio.create_task(inject_forever(cluster, traffic, rng)))

        for kind in [*kills, "none"]:
            target = len(traffic.sent) + size.per_round
            async with asyncio.timeout(WAIT):
                while len(traffic.sent) < target:
                    await asyncio.sleep(0.02)
            if kind == "none":
                break
            await asyncio.sleep(rng.uniform(0.0, 0.3))  # land anywhere in the stream
            kill_cursor = seen.last_cursor
            started = time.monotonic()
            traffic.kills.append((kind, started))
            if kind == "core":
                await cluster.kill_core()
                await cluster.start()
                await wait_recovered(cluster, seen, traffic, kill_cursor, every_instance=True)
                recoveries.append(time.monotonic() - started)
            else:
                before = cluster.workers()
                assert before, "the core has no engine workers"
                os.kill(rng.choice(before), signal.SIGKILL)
                async with asyncio.timeout(WAIT):  # its replacement is up
                    while len(set(cluster.workers()) - set(before)) < 1:
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # the core reports the dead worker's instances
                await wait_recovered(cluster, seen, traffic, kill_cursor, every_instance=False)
        traffic.stop.set()
        await asyncio.gather(tasks[1], tasks[2])

        # Quiet: every message final, no event for a while (receipts come within 0.3 s).
        client = cluster.client()
        async with asyncio.timeout(WAIT):
            while True:
                messages = [m for i in instances for m in await Messenger(client).all_messages(i)]
                pending = [m for m in messages if m.state not in FINAL]
                if not pending and time.monotonic() - seen.last_time > 2.0:
                    break
                await asyncio.sleep(0.2)
        full = await replay(client, seen.last_cursor)
        messages = [m for i in instances for m in await Messenger(client).all_messages(i)]
        final_instances = {i: await client.get(i) for i in instances}
        received = {i: await Messenger(client).received(i) for i in instances}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cluster.close()

    check_subscriber(seen, full)
    by_id = check_messages([message_id for _, message_id in traffic.sent.values()], messages)

    # None sent twice; every one sent arrived once.
    texts = collections.Counter(r.text for i in instances for r in received[i] if r.kind == "text")
    twice = [text for text, count in texts.items() if count > 1]
    assert not twice, f"phones received these twice: {twice[:10]}"
    for text, (_, message_id) in traffic.sent.items():
        if by_id[message_id].state in SENT:
            assert texts[text] == 1, f"{text!r} is {by_id[message_id].state} but never arrived"

    # Every message state and instance state has its event.
    check_message_events(messages, seen.events)
    last = last_states(seen.events)
    for instance_id, instance in final_instances.items():
        assert instance.state == IS.INSTANCE_STATE_CONNECTED, instance
        assert (last[instance_id].state, last[instance_id].reason) == (
            instance.state,
            instance.state_reason,
        ), f"{instance_id}: {instance} but its last event is {last[instance_id]}"

    check_no_qr_after(seen.events, paired_cursor)
    acknowledged = {m: (traffic.acked_at[m], traffic.kills) for m in traffic.injected}
    check_inbound(seen.events, acknowledged, traffic.unacknowledged)

    states = collections.Counter(S.Name(m.state) for m in messages)
    return {
        "instances": size.instances,
        "core kills": size.core_kills,
        "worker kills": size.worker_kills,
        "messages accepted": len(messages),
        "send retries after a kill": traffic.retries,
        "message states": dict(states),
        "delivery unknown": states["MESSAGE_STATE_DELIVERY_UNKNOWN"],
        "inbound acknowledged": len(traffic.injected),
        "inbound cut by a kill": len(traffic.unacknowledged),
        "events seen": len(seen.events),
        "subscriber resumes": seen.resumes,
        "core recovery seconds (median)": round(statistics.median(recoveries), 2)
        if recoveries
        else None,
        "core recovery seconds (max)": round(max(recoveries), 2) if recoveries else None,
        "seed": seed,
    }


async def test_chaos_kills_of_the_core_and_its_workers_lose_and_repeat_nothing(
    tmp_path: Path, database_url: str
) -> None:
    seed = int(os.environ.get("ZAPGATE_CHAOS_SEED", random.randrange(1 << 30)))
    figures = await run_chaos(tmp_path, database_url, chosen_size(), seed)
    backend = database_url.split(":")[0]
    print(f"\nchaos on {backend}: " + ", ".join(f"{k}: {v}" for k, v in figures.items()))
