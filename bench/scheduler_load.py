"""The central send scheduler under load, in real time on an asyncio loop, against a bare
heap + `loop.call_at` baseline measured in the same run.

Scheduler run: N instances (short policy: 1-3 s gaps, no quiet hours, caps that do not bind)
each get M queued messages whose send-at times are spread over the first seconds (so the
instances do not all start in the same millisecond). One driver callback, armed with
`loop.call_at` for `next_wakeup()`, dispatches everything `due()` returns and reports each
release as sent at once (`on_sent`), then re-arms. Lateness of a release = the wall-clock time
it was handed over minus the release time the scheduler had planned (`Release.scheduled_at`).

Baseline run: the same schedule of due times (shifted to a new start), in a plain heap, with
the same callback structure: pop what is due, hand it over, re-arm with `loop.call_at`.

CPU per dispatched message is `time.process_time()` over the run divided by the messages
dispatched; the ratios (scheduler / baseline) are the scheduler's own cost on top of the
bare minimum any timer-driven dispatcher pays.

    python bench/scheduler_load.py [--instances 10000] [--messages 6] [--uvloop] [--typing]
                                   [--default-gc]

Both runs use the garbage collector's settings `zapgate serve` applies after its start
(gateway/ops/gc_policy.py: `gc.freeze()`, a young-generation threshold of 50,000);
`--default-gc` keeps Python's defaults instead. The tail of the scheduler's lateness is
mostly the collector's young-generation passes; the scheduler makes little cyclic garbage,
so with the higher threshold almost none run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from zapgate.gateway.ops.gc_policy import settle_after_start
from zapgate.ratelimit.decisions import Release
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy
from zapgate.ratelimit.scheduler import Scheduler

SHORT_POLICY = replace(
    DEFAULT_POLICY,
    min_gap_seconds=1.0,
    jitter_min_seconds=0.0,
    jitter_max_seconds=2.0,
    per_minute=60,
    per_hour=3600,
    per_day=100_000,
    new_contacts_per_day=100_000,
    warmup_days=1,
    quiet_start_hour=None,
    quiet_end_hour=None,
    typing=False,
    timezone="America/Sao_Paulo",
)
LEAD_SECONDS = 1.0  # setup ends this long before the first message is due
SPREAD_SECONDS = 2.0  # first send-at times spread over this


@dataclass
class Run:
    lateness: list[float]
    cpu_seconds: float
    wall_seconds: float

    @property
    def dispatched(self) -> int:
        return len(self.lateness)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.lateness)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def cpu_per_message_us(self) -> float:
        return self.cpu_seconds / self.dispatched * 1e6


class Dispatcher:
    """One callback, re-armed with loop.call_at: the shape of a real driver."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        next_due: Callable[[], float | None],
        dispatch: Callable[[], int],
        expected: int,
    ) -> None:
        self.loop, self.next_due, self.dispatch = loop, next_due, dispatch
        self.expected, self.count = expected, 0
        self.done: asyncio.Future[None] = loop.create_future()

    def arm(self) -> None:
        due = self.next_due()
        if due is None or self.count >= self.expected:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.loop.call_at(self.loop.time() + (due - time.time()), self.fire)

    def fire(self) -> None:
        self.count += self.dispatch()
        self.arm()


def build_scheduler(args: argparse.Namespace, policy: SendPolicy) -> tuple[Scheduler, float, float]:
    """A scheduler with every instance configured and its messages queued; returns it with
    the enqueue CPU time per message and the epoch the first message is due at."""
    rng = random.Random(args.seed)
    scheduler = Scheduler(time.time, rng)
    now = time.time()
    for n in range(args.instances):
        scheduler.configure(f"i{n}", policy, now - 30 * 86_400)
        scheduler.set_ready(f"i{n}", True)
    start = now + LEAD_SECONDS + args.instances * args.messages * 60e-6  # room to enqueue
    placement = random.Random(args.seed + 1)
    seq = 0
    cpu = time.process_time()
    for n in range(args.instances):
        first = start + placement.uniform(0, SPREAD_SECONDS)
        for k in range(args.messages):
            scheduler.enqueue(
                Outgoing(
                    message_id=f"m{seq}",
                    instance=f"i{n}",
                    recipient=f"+55119{n:05d}{k:03d}",
                    text_length=placement.randint(5, 200),
                    priority=placement.choice((0, 0, 0, 1)),
                    seq=seq,
                    not_before=first,
                    expires_at=None,
                )
            )
            seq += 1
    enqueue_us = (time.process_time() - cpu) / seq * 1e6
    if time.time() > start:
        print(f"warning: setup ended {time.time() - start:.2f} s after the first send-at time")
    return scheduler, enqueue_us, start


async def run_scheduler(args: argparse.Namespace) -> tuple[Run, list[float], float, float]:
    loop = asyncio.get_running_loop()
    policy = replace(SHORT_POLICY, typing=args.typing, typing_max_seconds=0.5)
    policy = replace(policy, typing_chars_per_second=400.0)
    scheduler, enqueue_us, start = build_scheduler(args, policy)
    expected = args.instances * args.messages
    lateness: list[float] = []
    schedule: list[float] = []

    def dispatch() -> int:
        count = 0
        for decision in scheduler.due():
            if isinstance(decision, Release):
                handed = time.time()
                lateness.append(handed - decision.scheduled_at)
                schedule.append(decision.scheduled_at - start)
                message = decision.message
                if decision.typing_seconds > 0:
                    loop.call_later(
                        decision.typing_seconds,
                        scheduler.on_sent,
                        message.instance,
                        message.message_id,
                    )
                else:
                    scheduler.on_sent(message.instance, message.message_id)
                count += 1
        return count

    dispatcher = Dispatcher(loop, scheduler.next_wakeup, dispatch, expected)
    settle_gc(args)
    cpu, wall = time.process_time(), time.perf_counter()
    dispatcher.arm()
    await dispatcher.done
    run = Run(lateness, time.process_time() - cpu, time.perf_counter() - wall)
    return run, schedule, enqueue_us, start


async def run_baseline(args: argparse.Namespace, schedule: list[float]) -> Run:
    loop = asyncio.get_running_loop()
    start = time.time() + LEAD_SECONDS
    heap = [start + offset for offset in schedule]
    heapq.heapify(heap)
    lateness: list[float] = []

    def dispatch() -> int:
        count = 0
        now = time.time()
        while heap and heap[0] <= now:
            due = heapq.heappop(heap)
            lateness.append(time.time() - due)
            count += 1
        return count

    dispatcher = Dispatcher(
        loop, lambda: heap[0] if heap else None, dispatch, expected=len(schedule)
    )
    settle_gc(args)
    cpu, wall = time.process_time(), time.perf_counter()
    dispatcher.arm()
    await dispatcher.done
    return Run(lateness, time.process_time() - cpu, time.perf_counter() - wall)


def settle_gc(args: argparse.Namespace) -> None:
    if args.default_gc:
        gc.collect()
    else:
        settle_after_start()  # as `zapgate serve` does


def report(args: argparse.Namespace, ours: Run, base: Run, enqueue_us: float) -> None:
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.instances} instances x {args.messages} messages, gaps 1-3 s, "
        f"typing {'on' if args.typing else 'off'}, loop {'uvloop' if args.uvloop else 'asyncio'}"
        f", gc {'default' if args.default_gc else 'as zapgate serve sets it'}"
    )
    print(f"enqueue: {enqueue_us:.1f} us CPU per message; peak RSS {rss_mib:.0f} MiB")
    rows = [
        ("dispatched", f"{ours.dispatched}", f"{base.dispatched}", ""),
        (
            "rate (msg/s)",
            f"{ours.dispatched / ours.wall_seconds:.0f}",
            f"{base.dispatched / base.wall_seconds:.0f}",
            "",
        ),
    ]
    for label, q in (("lateness p50 (ms)", 0.50), ("lateness p99 (ms)", 0.99)):
        a, b = ours.percentile(q) * 1e3, base.percentile(q) * 1e3
        rows.append((label, f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}" if b > 0 else "-"))
    rows.append(
        (
            "lateness max (ms)",
            f"{max(ours.lateness) * 1e3:.2f}",
            f"{max(base.lateness) * 1e3:.2f}",
            "",
        )
    )
    a, b = ours.cpu_per_message_us(), base.cpu_per_message_us()
    rows.append(("CPU per message (us)", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}"))
    print(f"{'':24}{'scheduler':>12}{'baseline':>12}{'ratio':>8}")
    for label, x, y, ratio in rows:
        print(f"{label:24}{x:>12}{y:>12}{ratio:>8}")
    mean = statistics.fmean(ours.lateness) * 1e3
    print(f"(scheduler mean lateness {mean:.2f} ms over {ours.wall_seconds:.1f} s)")


async def main(args: argparse.Namespace) -> None:
    ours, schedule, enqueue_us, _ = await run_scheduler(args)
    base = await run_baseline(args, schedule)
    report(args, ours, base, enqueue_us)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=6, help="queued per instance")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--typing", action="store_true", help="typing simulation (<= 0.5 s)")
    parser.add_argument(
        "--default-gc", action="store_true", help="Python's collector defaults, not the server's"
    )
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
