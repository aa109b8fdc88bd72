"""The scheduler's own cost per released message, in virtual time: the workload of
`bench/scheduler_load.py` (N instances x M messages, 1-3 s gaps, caps that do not bind)
without an event loop, so nothing but the scheduler and a minimal driver runs.

The driver jumps the clock to `next_wakeup()` plus a fixed lateness (0.7 ms, the loop's
median in the load bench, so the late-driver path runs as it does there), hands every
`Release` back at once with `on_sent`, and stops when all messages went out. It prints the
CPU time per message; on a shared machine, where CPU times move with the neighbours' load,
count instructions instead:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/scheduler_cost.py --instances 300 [--setup-only]

(instructions per message = (total - total with --setup-only) / messages).
"""

from __future__ import annotations

import argparse
import random
import time

from scheduler_load import SHORT_POLICY  # (bench/ is on the path when run as a script)

from zapgate.ratelimit.decisions import Release
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.scheduler import Scheduler

START = 1_700_000_000.0
LATENESS = 0.0007


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


def build(instances: int, messages: int, seed: int) -> tuple[Scheduler, Clock]:
    clock = Clock()
    scheduler = Scheduler(clock, random.Random(seed))
    for n in range(instances):
        scheduler.configure(f"i{n}", SHORT_POLICY, START - 30 * 86_400)
        scheduler.set_ready(f"i{n}", True)
    placement = random.Random(seed + 1)
    seq = 0
    for n in range(instances):
        first = START + 1 + placement.uniform(0, 2)
        for k in range(messages):
            length, priority = placement.randint(5, 200), placement.choice((0, 0, 0, 1))
            scheduler.enqueue(
                Outgoing(
                    f"m{seq}", f"i{n}", f"+55119{n:05d}{k:03d}", length, priority, seq, first, None
                )
            )
            seq += 1
    return scheduler, clock


def drive(scheduler: Scheduler, clock: Clock) -> int:
    released = 0
    while (wake := scheduler.next_wakeup()) is not None:
        clock.t = max(clock.t, wake + LATENESS)
        for decision in scheduler.due():
            if isinstance(decision, Release):
                scheduler.on_sent(decision.message.instance, decision.message.message_id)
                released += 1
    return released


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--setup-only", action="store_true", help="stop before dispatching")
    args = parser.parse_args()
    scheduler, clock = build(args.instances, args.messages, args.seed)
    if args.setup_only:
        return
    cpu = time.process_time()
    released = drive(scheduler, clock)
    per_message = (time.process_time() - cpu) / released * 1e6
    print(f"{args.instances} instances: {released} released, {per_message:.1f} us CPU per message")


if __name__ == "__main__":
    main()
