"""The cluster chaos test: `zapgate serve --cluster` nodes on one PostgreSQL and one
simulated WhatsApp, each node reaching PostgreSQL through its own TCP proxy the test can cut,
under a steady stream of idempotent sends and inbound messages, with a subscriber following
every node. Random rounds of:

- `kill`: kill -9 of a node, then a new node in its place;
- `pause`: SIGSTOP of a node (its workers too: a frozen machine) past its lease, then
  SIGCONT: fencing must make it stop every connection it held;
- `partition`: the node's proxy stops passing bytes past the lease, then heals;
- `drain`: SIGTERM, the node exits 0, a new node in its place;
- `join`: one node more (the cluster then has one extra node until a drain).

After each round every instance must be CONNECTED again on a healthy node (the time is
reported against 2x the lease TTL, never asserted: the machine is shared). Afterwards: no
lease epoch was acquired by two nodes and the simulated WhatsApp kicked no connection except
a paused node's frozen ones (no double ownership), a node woken from a pause or a partition
logged losing every instance it held, no message lost or created twice, each sent one on its
phone exactly once and no message id delivered twice, DELIVERY_UNKNOWN only on instances a
fault moved, every subscriber saw every event exactly once and in order (resuming by cursor
on another node when its node died), every acknowledged inbound message once, and no QR
ever after pairing.

Calls go to a random healthy node. A node that does not own the instance answers
UNAVAILABLE with the owner's address in its ErrorInfo: the call is retried there (once
calls are forwarded between nodes, the first node answers and no retry happens). Inbound
messages are injected on the lease's owner (simulator calls act on the owner's engine).

CI runs a short version (`SHORT`); the full one (3 nodes, 300 instances, 100 rounds):

    ZAPGATE_CHAOS=full .venv/bin/pytest tests/test_cluster_chaos.py -s
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import os
import random
import re
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.chaos_checks import (
    CUT,
    FINAL,
    IS,
    QUICK_NODE_FLAGS,
    SENT,
    WAIT,
    S,
    Seen,
    check_inbound,
    check_message_events,
    check_messages,
    check_no_qr_after,
    check_subscriber,
    replay,
    subscribe,
)
from tests.cluster_nodes import Cluster
from tests.messaging import STREAM_POLICY, Messenger
from tests.pg_proxy import ProxyProcess
from tests.postgres import create_database
from tests.processes import child_pids
from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from tests.sim_server import SimulatedWhatsApp, simulated_whatsapp
from zapgate.engine.v1 import simwa_pb2 as swpb
from zapgate.gateway.store.db import create_engine
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

T = TypeVar("T")
TENANT = "chaos"
FAULTS = ("kill", "pause", "partition", "drain", "join")
LATE_KICK = 5.0  # seconds after SIGCONT a frozen connection's kick may still be recorded
SENDERS = 4  # concurrent senders: one call may wait for a takeover while others go on
ACQUIRED = re.compile(r"acquired chaos/(\S+) \(epoch (\d+)\)")
LOST = re.compile(r"lost the lease of chaos/(\S+) \(")


@dataclasses.dataclass(frozen=True)
class Size:
    nodes: int
    instances: int
    rounds: int
    per_round: int  # messages accepted between two faults
    lease_ttl: float


SHORT = Size(nodes=3, instances=30, rounds=10, per_round=10, lease_ttl=15.0)
FULL = Size(nodes=3, instances=300, rounds=100, per_round=10, lease_ttl=15.0)


def chosen_size() -> Size:
    """SHORT, or FULL with ZAPGATE_CHAOS=full; ZAPGATE_CHAOS_ROUNDS overrides the rounds."""
    size = FULL if os.environ.get("ZAPGATE_CHAOS") == "full" else SHORT
    rounds = os.environ.get("ZAPGATE_CHAOS_ROUNDS")
    return dataclasses.replace(size, rounds=int(rounds)) if rounds else size


_databases = itertools.count()

# Not in the default suite yet: no run has passed every check end to end (docs/cluster.md,
# "The cluster chaos test"), and a failing run takes minutes. Run it on purpose with
# ZAPGATE_CHAOS_CLUSTER=1 (any size).
RUN_ON_PURPOSE = pytest.mark.skipif(
    not os.environ.get("ZAPGATE_CHAOS_CLUSTER"),
    reason="cluster chaos runs on purpose: ZAPGATE_CHAOS_CLUSTER=1 (does not pass end to end yet)",
)


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"zapgate_chaos_{os.getpid()}_{next(_databases)}")


@dataclasses.dataclass
class Node:
    name: str
    server: ServerProcess
    proxy: ProxyProcess
    channel: grpc.aio.Channel
    paused: bool = False

    @property
    def healthy(self) -> bool:
        """Reachable and on the database: where clients send their calls."""
        return not self.paused and not self.proxy.is_cut

    def pids(self) -> list[int]:
        """The node's process and its engine workers (a frozen machine stops them all)."""
        core = self.server.process.pid
        return [core, *child_pids(core)]

    def signal_all(self, signum: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def read_log(self) -> list[str]:
        while not self.server.lines.empty():
            self.server.log.append(self.server.lines.get_nowait())
        return self.server.log


class ChaosCluster:
    """The nodes, each behind its own proxy to PostgreSQL; `slots` keeps one place per
    node so subscriber n follows whatever node runs in slot n."""

    def __init__(
        self, root: Path, database_url: str, size: Size, whatsapp: SimulatedWhatsApp
    ) -> None:
        self.base = Cluster(root, database_url, lease_ttl=size.lease_ttl)
        self.whatsapp = whatsapp
        self.pauses: list[tuple[str, float, float]] = []  # node, from, to (wall clock)
        self.size = size
        self.slots: list[Node | None] = []
        self.retired: list[Node] = []  # stopped nodes, for their logs and phone files
        self.names = itertools.count()
        self.key = ""
        self.rng = random.Random()
        self.addresses: dict[str, Node] = {}
        self.engine = create_engine(database_url)

    @property
    def running(self) -> list[Node]:
        return [node for node in self.slots if node is not None]

    def healthy(self) -> list[Node]:
        return [node for node in self.running if node.healthy]

    async def start(self, slot: int) -> Node:
        target = urlsplit(self.base.database_url)
        proxy = await asyncio.to_thread(
            ProxyProcess, target.hostname or "127.0.0.1", target.port or 5432
        )
        name = f"n{next(self.names)}"
        server = await asyncio.to_thread(
            self.base.start,
            name,
            *QUICK_NODE_FLAGS,
            *self.whatsapp.flags(),
            database_url=proxy.url_for(self.base.database_url),
        )
        node = Node(name, server, proxy, grpc.aio.insecure_channel(server.address))
        self.addresses[server.address] = node
        while len(self.slots) <= slot:
            self.slots.append(None)
        self.slots[slot] = node
        return node

    async def retire(self, node: Node) -> None:
        """The node's process is gone: out of its slot, its proxy closed. Its channel stays
        open (calls on it fail UNAVAILABLE by themselves)."""
        self.slots[self.slots.index(node)] = None
        self.retired.append(node)
        node.proxy.close()

    async def close(self) -> None:
        for node in [*self.running, *self.retired]:
            if node.paused:
                node.signal_all(signal.SIGCONT)
            await node.channel.close(None)
            node.proxy.close()
        self.base.close()
        await self.engine.dispose()
        for node in [*self.running, *self.retired]:  # kept with the test's files, for failures
            (self.base.root / f"{node.name}.log").write_text("".join(node.read_log()))

    def client(self, node: Node) -> SimClient:
        return SimClient(node.channel, self.key)

    async def any_client(self) -> SimClient:
        while not (nodes := self.healthy()):
            await asyncio.sleep(0.05)
        return self.client(self.rng.choice(nodes))

    async def subscriber_client(self, slot: int) -> SimClient:
        """Subscriber `slot` follows the node in its slot, or any healthy node meanwhile."""
        node = self.slots[slot] if slot < len(self.slots) else None
        if node is not None and node.healthy:
            return self.client(node)
        return await self.any_client()

    async def call(self, what: Callable[[SimClient], Awaitable[T]]) -> tuple[T, int]:
        """Runs a call on a random healthy node; returns its result and how many attempts it
        took. A non-owner's UNAVAILABLE names the owner: the call goes there next; a call
        cut by a fault, or made while nobody owns the instance, is retried."""
        deadline = time.monotonic() + WAIT
        attempts = 0
        target: Node | None = None
        while True:
            node = target if target is not None and target.healthy else None
            client = self.client(node) if node is not None else await self.any_client()
            target = None
            attempts += 1
            try:
                return await what(client), attempts
            except grpc.aio.AioRpcError as error:
                retry = error.code() in CUT or is_not_running(error)
                if not retry or time.monotonic() > deadline:
                    raise
                target = self.addresses.get(owner_address(error))
            except grpc.aio.UsageError:
                pass
            await asyncio.sleep(0.02 if target is not None else 0.1)

    async def rows(self, query: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
        """Read straight from the database (not through any proxy), on one pool: the test
        polls often, and a connection per query would load the machine."""
        async with self.engine.connect() as conn:
            return list(await conn.execute(sa.text(query), params))


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return info


def owner_address(error: grpc.aio.AioRpcError) -> str:
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return ""
    return str(error_info(error).metadata.get("owner_address", ""))


def is_not_running(error: grpc.aio.AioRpcError) -> bool:
    """Nobody owns the instance right now (its owner died and the lease has not expired, or
    it was just released): the next owner will take it."""
    return (
        error.code() == grpc.StatusCode.FAILED_PRECONDITION
        and error_info(error).reason == "INSTANCE_NOT_RUNNING"
    )


@dataclasses.dataclass
class Traffic:
    instances: list[str]
    sent: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # text -> ids
    injected: dict[str, str] = dataclasses.field(default_factory=dict)  # message id -> inst
    unacknowledged: set[str] = dataclasses.field(default_factory=set)
    retries: int = 0
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


async def send_forever(
    cluster: ChaosCluster, traffic: Traffic, rng: random.Random, lane: int = 0
) -> None:
    """One message after another, each with a unique text and idempotency key; a call cut by
    a fault is retried with the same key until it is accepted. Senders run in SENDERS
    lanes, each with its own numbers."""
    for number in itertools.count(lane, SENDERS):
        if traffic.stop.is_set():
            return
        instance_id = traffic.instances[number % len(traffic.instances)]
        text = f"chaos message {number}"
        request = mpb.SendMessageRequest(
            instance_id=instance_id,
            phone=f"+551197{number % len(traffic.instances):04d}{rng.randrange(5):02d}",
            text=mpb.Text(body=text),
            idempotency_key=f"chaos-{number}",
        )

        async def send(client: SimClient, request: mpb.SendMessageRequest = request) -> str:
            reply = await Messenger(client).stub.SendMessage(
                request, metadata=client.metadata, timeout=10
            )
            return reply.message.id

        message_id, attempts = await cluster.call(send)
        traffic.sent[text] = (instance_id, message_id)
        traffic.retries += attempts - 1
        await asyncio.sleep(rng.uniform(0.0, 0.02))


async def owners(cluster: ChaosCluster) -> dict[str, tuple[str, int]]:
    """instance id -> (owner node, epoch) of every unexpired lease."""
    rows = await cluster.rows(
        "SELECT instance_id, owner_node, epoch FROM instance_leases "
        "WHERE expire_us > (extract(epoch from clock_timestamp()) * 1000000)::bigint"
    )
    return {str(row[0]): (str(row[1]), int(row[2])) for row in rows}  # type: ignore[call-overload]


async def inject_forever(cluster: ChaosCluster, traffic: Traffic, rng: random.Random) -> None:
    """Inbound messages from contacts' phones, injected on the instance's owner (simulator
    calls are not forwarded between nodes yet); one the gateway acknowledged must become
    exactly one event, one cut by a fault at most one."""
    for number in itertools.count():
        if traffic.stop.is_set():
            return
        await asyncio.sleep(rng.uniform(0.02, 0.06))
        instance_id = traffic.instances[number % len(traffic.instances)]
        owner = (await owners(cluster)).get(instance_id)
        nodes = {node.name: node for node in cluster.healthy()}
        if owner is None or owner[0] not in nodes:
            continue  # moving: nothing to inject on
        message_id = f"CHAOSIN{number:06d}"
        request = spb.InjectIncomingMessageRequest(
            instance_id=instance_id,
            from_phone=f"+55119800{number % 100:04d}",
            push_name="Chaos",
            text=f"inbound {number}",
            message_id=message_id,
        )
        client = cluster.client(nodes[owner[0]])
        try:
            await client.sim.InjectIncomingMessage(request, metadata=client.metadata, timeout=10)
            traffic.injected[message_id] = instance_id
        except (grpc.aio.AioRpcError, grpc.aio.UsageError):
            traffic.unacknowledged.add(message_id)


@dataclasses.dataclass(frozen=True)
class Round:
    fault: str
    node: str
    moved: int  # instances the faulted node held
    recovered_seconds: float


async def snapshot_of_ownership(cluster: ChaosCluster) -> tuple[int, dict[str, tuple[str, int]]]:
    cursor = await cluster.rows("SELECT coalesce(max(cursor), 0) FROM events")
    return int(cursor[0][0]), await owners(cluster)  # type: ignore[call-overload]


async def unrecovered(
    cluster: ChaosCluster, instances: list[str], moved: dict[str, int], cursor: int
) -> dict[str, str]:
    """Instances not yet back, with why: each must be CONNECTED under an unexpired lease of
    a healthy node; each one in `moved` (id -> epoch before the fault) acquired again and
    connected since `cursor`."""
    leases = await owners(cluster)
    healthy = {node.name for node in cluster.healthy()}
    rows = await cluster.rows("SELECT id, state FROM instances WHERE tenant = :t", t=TENANT)
    states = {str(row[0]): int(row[1]) for row in rows}  # type: ignore[call-overload]
    changed = {
        str(row[0])
        for row in await cluster.rows(
            "SELECT DISTINCT instance_id FROM events WHERE cursor > :c AND type = :t",
            c=cursor,
            t=epb.EVENT_TYPE_STATE_CHANGED,
        )
    }
    waiting = {}
    for instance_id in instances:
        owner = leases.get(instance_id)
        if owner is None or owner[0] not in healthy:
            waiting[instance_id] = f"lease {owner}"
        elif states.get(instance_id) != IS.INSTANCE_STATE_CONNECTED:
            waiting[instance_id] = f"{IS.Name(states.get(instance_id, 0))} on {owner}"
        elif instance_id in moved and owner[1] <= moved[instance_id]:
            waiting[instance_id] = f"not acquired again: {owner}"
        elif instance_id in moved and instance_id not in changed:
            waiting[instance_id] = f"no state change since the fault: {owner}"
    return waiting


async def wait_recovered(
    cluster: ChaosCluster, traffic: Traffic, moved: dict[str, int], cursor: int
) -> None:
    started = time.monotonic()
    deadline = started + WAIT
    late = started + 2 * cluster.size.lease_ttl  # past it, say once what is still waiting
    while waiting := await unrecovered(cluster, traffic.instances, moved, cursor):
        if late and time.monotonic() > late:
            print(f"{time.strftime('%H:%M:%S')} still waiting after 2x TTL: {waiting}")
            late = 0.0
        for task in traffic.tasks:
            if task.done():  # a subscriber, the sender or the injector stopped: say why
                if task.exception() is not None:
                    print(f"{task.get_name()} failed; lock waits: {await lock_waits(cluster)}")
                task.result()
                raise AssertionError(f"{task.get_name()} ended")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"instances did not come back: {waiting}, "
                f"healthy nodes {[n.name for n in cluster.healthy()]}, "
                f"sessions waiting on locks and their blockers: {await lock_waits(cluster)}"
            )
        await asyncio.sleep(0.1)


async def lock_waits(cluster: ChaosCluster) -> list[dict[str, object]]:
    """For a failure's message: the database sessions waiting on a lock, and those they
    wait for (what they run, since when, through which proxy port)."""
    rows = await cluster.rows(
        "WITH waiting AS (SELECT pid, pg_blocking_pids(pid) AS blockers FROM pg_stat_activity "
        "WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0) "
        "SELECT a.pid, a.client_port, a.application_name, a.state, a.wait_event_type, "
        "a.wait_event, now() - a.xact_start AS open_for, left(a.query, 160) AS query, "
        "w.blockers FROM pg_stat_activity a LEFT JOIN waiting w ON w.pid = a.pid "
        "WHERE a.pid IN (SELECT pid FROM waiting) "
        "OR a.pid IN (SELECT unnest(blockers) FROM waiting)"
    )
    return [dict(row._mapping) for row in rows]


async def wait_lost(node: Node, held: list[str]) -> None:
    """Woken, the node must log losing every instance it held: their connections stopped."""
    deadline = time.monotonic() + WAIT
    while True:
        lost = {m.group(1) for line in node.read_log() if (m := LOST.search(line))}
        if set(held) <= lost:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.name} never dropped {sorted(set(held) - lost)[:10]}")
        await asyncio.sleep(0.1)


def pick_fault(cluster: ChaosCluster, rng: random.Random) -> str:
    """A random fault; ZAPGATE_CHAOS_FAULTS=pause,partition,... limits the choice (to chase
    one kind of failure)."""
    chosen = os.environ.get("ZAPGATE_CHAOS_FAULTS")
    faults = tuple(chosen.split(",")) if chosen else FAULTS
    if len(cluster.running) > cluster.size.nodes:
        # Back to `nodes` first.
        faults = tuple(f for f in faults if f != "join") or ("kill", "pause", "partition", "drain")
    return rng.choice(faults)


async def one_round(cluster: ChaosCluster, traffic: Traffic, rng: random.Random) -> Round:
    fault = pick_fault(cluster, rng)
    node = rng.choice(cluster.running)
    cursor, before = await snapshot_of_ownership(cluster)
    moved = {i: epoch for i, (owner, epoch) in before.items() if owner == node.name}
    ttl = cluster.size.lease_ttl
    slot = cluster.slots.index(node)
    started = time.monotonic()
    replacement: asyncio.Task[Node] | None = None
    if fault == "kill":
        node.server.process.kill()
        await asyncio.to_thread(node.server.wait)
        await cluster.retire(node)
        replacement = asyncio.create_task(cluster.start(slot))  # a restarted node is new
    elif fault == "pause":
        paused_at = time.time()
        node.paused = True
        node.signal_all(signal.SIGSTOP)
        await asyncio.sleep(ttl * 1.5)  # past its lease
    elif fault == "partition":
        node.proxy.cut()
        await asyncio.sleep(ttl * 1.5)
    elif fault == "drain":
        node.server.terminate()
        assert await asyncio.to_thread(node.server.wait, WAIT) == 0, f"{node.name} drain failed"
        await cluster.retire(node)
        if len(cluster.running) < cluster.size.nodes:
            replacement = asyncio.create_task(cluster.start(slot))
    else:  # join
        moved = {}
        await cluster.start(len(cluster.slots))
    await wait_recovered(cluster, traffic, moved, cursor)
    took = time.monotonic() - started
    if replacement is not None:
        await replacement
    if fault == "pause":
        node.signal_all(signal.SIGCONT)
        node.paused = False
        cluster.pauses.append((node.name, paused_at, time.time()))
        await wait_lost(node, list(moved))
    elif fault == "partition":
        node.proxy.heal()
        await wait_lost(node, list(moved))
    return Round(fault, node.name, len(moved), took)


async def wait_quiet(cluster: ChaosCluster, seens: list[Seen]) -> None:
    """Until every message is final and no subscriber got an event for 2 s (receipts come
    within 0.3 s). Read from the database: a call per instance per poll would load the
    machine. On a hang, says which messages are still pending, on which instance's owner."""
    finals = ", ".join(str(int(state)) for state in FINAL)
    deadline = time.monotonic() + WAIT
    while True:
        pending = await cluster.rows(
            f"SELECT m.instance_id, m.state, m.id, l.owner_node FROM messages m "
            "LEFT JOIN instance_leases l ON l.tenant = m.tenant AND l.instance_id = m.instance_id "
            f"WHERE m.tenant = :t AND m.state NOT IN ({finals}) ORDER BY m.instance_id",
            t=TENANT,
        )
        quiet = min(time.monotonic() - seen.last_time for seen in seens)
        if not pending and quiet > 2.0:
            return
        if time.monotonic() > deadline:
            rows = [(r[0], S.Name(int(r[1])), r[2], r[3]) for r in pending[:20]]  # type: ignore[call-overload]
            raise AssertionError(
                f"not quiet: {len(pending)} messages pending {rows}, quiet {quiet:.1f}s"
            )
        await asyncio.sleep(0.2)


async def phone_texts(cluster: ChaosCluster, jids: list[str]) -> collections.Counter[str]:
    """What the recipients' phones received from every instance, from the simulated
    WhatsApp shared by all nodes."""
    texts: collections.Counter[str] = collections.Counter()
    for jid in jids:
        texts.update(r.text for r in await cluster.whatsapp.received(jid) if r.kind == "text")
    return texts


def frozen_kicks(
    cluster: ChaosCluster, replacements: list[swpb.StreamReplacement]
) -> tuple[int, list[swpb.StreamReplacement]]:
    """Kicks of a paused node's connections (its workers were frozen with it: WhatsApp kicks
    them when the new owner connects, and the node, woken, finds its leases gone) and the
    others, which are double ownership."""
    frozen, others = 0, []
    for kick in replacements:
        if any(
            kick.old_node == node and start <= kick.time <= end + LATE_KICK
            for node, start, end in cluster.pauses
        ):
            frozen += 1
        else:
            others.append(kick)
    return frozen, others


def acquisitions(nodes: list[Node]) -> collections.Counter[tuple[str, int]]:
    """(instance, epoch) -> how many nodes logged acquiring it."""
    found: collections.Counter[tuple[str, int]] = collections.Counter()
    for node in nodes:
        for line in node.read_log():
            if match := ACQUIRED.search(line):
                found[(match.group(1), int(match.group(2)))] += 1
    return found


async def pair_all(cluster: ChaosCluster, instances: list[str]) -> None:
    """Each instance created, given the fast policy and paired on a node in turn (Connect
    takes a free instance on the node it is called on)."""

    async def pair(n: int, instance_id: str) -> None:
        client = cluster.client(cluster.running[n % len(cluster.running)])
        await client.create(instance_id)
        await Messenger(client).set_policy(instance_id, STREAM_POLICY)
        result = await client.pair(instance_id, f"+5511960{n:06d}")
        assert result.instance.state == IS.INSTANCE_STATE_CONNECTED

    for start in range(0, len(instances), 10):
        batch = instances[start : start + 10]
        await asyncio.gather(*(pair(start + k, i) for k, i in enumerate(batch)))

    async with asyncio.timeout(WAIT):  # every session in the store before any fault
        while True:
            rows = await cluster.rows("SELECT count(*) FROM session_snapshots")
            if int(rows[0][0]) >= len(instances):  # type: ignore[call-overload]
                return
            await asyncio.sleep(0.1)


async def run_chaos(
    tmp_path: Path, database_url: str, size: Size, seed: int, whatsapp: SimulatedWhatsApp
) -> dict[str, object]:
    rng = random.Random(seed)
    print(f"cluster chaos seed {seed}: {size}")
    cluster = ChaosCluster(tmp_path, database_url, size, whatsapp)
    cluster.rng = random.Random(seed + 1)
    instances = [f"c{n:03d}" for n in range(size.instances)]
    traffic = Traffic(instances)
    seens = [Seen() for _ in range(size.nodes)]
    rounds: list[Round] = []
    try:
        cluster.key = await cluster.base.new_key(TENANT)
        for slot in range(size.nodes):
            await cluster.start(slot)
        await pair_all(cluster, instances)
        paired_cursor, _ = await snapshot_of_ownership(cluster)
        for slot, seen in enumerate(seens):
            follow = subscribe(lambda slot=slot: cluster.subscriber_client(slot), seen)  # type: ignore[misc]
            traffic.tasks.append(asyncio.create_task(follow, name=f"subscriber {slot}"))
        for lane in range(SENDERS):
            sender = send_forever(cluster, traffic, rng, lane)
            traffic.tasks.append(asyncio.create_task(sender, name=f"sender {lane}"))
        traffic.tasks.append(
            asyncio.create_task(inject_forever(cluster, traffic, rng), name="injector")
        )
        for number in range(size.rounds + 1):
            target = len(traffic.sent) + size.per_round
            async with asyncio.timeout(WAIT):
                while len(traffic.sent) < target:
                    await asyncio.sleep(0.02)
            if number == size.rounds:
                break
            rounds.append(await one_round(cluster, traffic, rng))
            print(f"{time.strftime('%H:%M:%S')} round {number}: {rounds[-1]}")
        traffic.stop.set()
        await asyncio.gather(*traffic.tasks[len(seens) :])

        # Quiet: every message final, no event for a while (receipts come within 0.3 s).
        await wait_quiet(cluster, seens)
        client = await cluster.any_client()
        messages = [m for i in instances for m in await Messenger(client).all_messages(i)]
        full = await replay(client, max(seen.last_cursor for seen in seens))
        final = {i: await client.get(i) for i in instances}
        all_nodes = [*cluster.running, *cluster.retired]
        epochs = acquisitions(all_nodes)
        phones = await phone_texts(cluster, [instance.jid for instance in final.values()])
        devices = await whatsapp.devices()
        frozen, double_owned = frozen_kicks(cluster, await whatsapp.replacements())
    finally:
        for task in traffic.tasks:
            task.cancel()
        await asyncio.gather(*traffic.tasks, return_exceptions=True)
        await cluster.close()

    # No double ownership: no instance's epoch was acquired by two nodes, and WhatsApp never
    # had to kick a live owner's connection for another's.
    twice = [key for key, count in epochs.items() if count > 1]
    assert not twice, f"epochs acquired twice: {twice[:10]}"
    assert not double_owned, f"stream replaced outside a pause: {double_owned[:5]}"
    assert not [d for d in devices if d.duplicates], "a phone received a message id twice"
    # Every subscriber: every event of the log once, in order, whatever node it was on.
    for slot, seen in enumerate(seens):
        check_subscriber(seen, full, who=f"subscriber {slot}")
    check_messages([message_id for _, message_id in traffic.sent.values()], messages)
    check_message_events(messages, full)
    # At most once on the phones; DELIVERY_UNKNOWN only where a fault moved the instance.
    repeated = [text for text, count in phones.items() if count > 1]
    assert not repeated, f"phones received these twice: {repeated[:10]}"
    unknown = [m for m in messages if m.state == S.MESSAGE_STATE_DELIVERY_UNKNOWN]
    moved_ever = {i for i, epoch in epochs if epoch > 1}
    assert {m.instance_id for m in unknown} <= moved_ever, "DELIVERY_UNKNOWN with no hand-off"
    assert all(m.failure_reason == "gateway_stopped" for m in unknown), unknown[:5]
    by_id = {m.id: m for m in messages}
    for text, (_, message_id) in traffic.sent.items():
        if by_id[message_id].state in SENT:
            assert phones[text] == 1, (
                f"{text!r} is {S.Name(by_id[message_id].state)}, not on a phone"
            )
    for instance in final.values():
        assert instance.state == IS.INSTANCE_STATE_CONNECTED, instance
    check_no_qr_after(full, paired_cursor)
    check_inbound(full, dict(traffic.injected), traffic.unacknowledged)

    times = [r.recovered_seconds for r in rounds if r.moved]
    states = collections.Counter(S.Name(m.state) for m in messages)
    return {
        "nodes": size.nodes,
        "instances": size.instances,
        "rounds": dict(collections.Counter(r.fault for r in rounds)),
        "lease TTL": size.lease_ttl,
        "recovery seconds (median)": round(statistics.median(times), 2) if times else None,
        "recovery seconds (max)": round(max(times), 2) if times else None,
        "recoveries over 2x TTL": sum(1 for t in times if t > 2 * size.lease_ttl),
        "instances moved": sum(r.moved for r in rounds),
        "messages accepted": len(messages),
        "send retries (owner elsewhere or cut)": traffic.retries,
        "message states": dict(states),
        "paused nodes' connections kicked": frozen,
        "inbound acknowledged": len(traffic.injected),
        "inbound cut by a fault": len(traffic.unacknowledged),
        "events": len(full),
        "subscriber resumes": [seen.resumes for seen in seens],
        "seed": seed,
    }


@RUN_ON_PURPOSE
@pytest.mark.postgres
async def test_cluster_chaos_loses_repeats_and_double_owns_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    seed = int(os.environ.get("ZAPGATE_CHAOS_SEED", random.randrange(1 << 30)))
    with simulated_whatsapp(tmp_path / "simwa") as whatsapp:
        figures = await run_chaos(tmp_path, postgres_url, chosen_size(), seed, whatsapp)
    print("\ncluster chaos: " + ", ".join(f"{k}: {v}" for k, v in figures.items()))
