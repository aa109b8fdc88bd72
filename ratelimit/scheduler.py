"""The central send scheduler: one object releases the messages of every instance.

It is pure: it never sleeps, spawns or does I/O. A driver asks `next_wakeup()`, sleeps until
then (or until it enqueues something), calls `due()`, and hands each `Release` to the engine,
reporting back with `on_sent` / `on_failed`. Time comes from the injected clock and chance from
the injected random source, so tests run it in virtual time.

Timers are per instance, not per message: one heap holds at most one live entry per instance,
keyed by the next time that instance needs attention (its next release, its next scheduled
message becoming due, or its next expiry). When an instance changes, its entry is replaced:
the old one stays in the heap and is skipped when it surfaces (lazy invalidation), and the heap
is rebuilt when stale entries outnumber live ones. Every operation costs O(log n) in the
number of instances plus O(log q) in the instance's own queue.

Fairness: instances are served in the order their timers fall due, each visit does a bounded
amount of work, and an instance holds at most one message in flight, so an instance with
10,000 queued messages takes one release per gap like any other and never delays the rest.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

from zapgate.ratelimit.decisions import AutoPause, Decision, Expiry, InstanceStats, Release
from zapgate.ratelimit.health import PauseRules
from zapgate.ratelimit.instance import InFlight, Instance
from zapgate.ratelimit.messages import Outgoing
from zapgate.ratelimit.policy import SendPolicy
from zapgate.ratelimit.waiting import Waiting, WaitReason

__all__ = [
    "AutoPause",
    "Decision",
    "Expiry",
    "InstanceStats",
    "Outgoing",
    "PauseRules",
    "Release",
    "Scheduler",
    "WaitReason",
    "Waiting",
]

# A release planned for a moment this close ahead goes out now: rounding of epoch seconds
# must not cost the driver an extra wake-up.
_EARLY = 1e-6
# Expiries handled in one visit of one instance; the rest come in the next `due()` call.
_EXPIRY_BATCH = 256
_HEAP_SLACK = 1024


class Scheduler:
    def __init__(
        self, clock: Callable[[], float], rng: random.Random, rules: PauseRules | None = None
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._rules = rules or PauseRules()
        self._instances: dict[str, Instance] = {}
        self._heap: list[tuple[float, int, str]] = []  # (wake, token, instance), lazy
        self._tokens = itertools.count(1)
        self._dirty: set[str] = set()

    # -- instances --------------------------------------------------------------------------

    def configure(self, instance: str, policy: SendPolicy, warmup_started_at: float) -> None:
        """Add an instance or change its policy. New instances start not ready and unpaused.
        `warmup_started_at`: when the number began sending (its first day is warm-up day 1)."""
        violations = policy.violations()
        if violations:
            summary = "; ".join(f"{field}: {text}" for field, text in violations)
            raise ValueError(f"invalid send policy: {summary}")
        inst = self._instances.get(instance)
        if inst is None:
            inst = Instance(instance, policy, warmup_started_at, self._rules, self._rng)
            self._instances[instance] = inst
        else:
            inst.configure(policy, warmup_started_at)
        self._reschedule(inst)

    def forget(self, instance: str) -> None:
        """Drop an instance and its queue (its heap entry dies lazily)."""
        self._instances.pop(instance, None)
        self._dirty.discard(instance)

    def set_ready(self, instance: str, ready: bool) -> None:
        """Connected or not. Messages of an instance that is not ready wait; they only end by
        cancel or expiry."""
        inst = self._get(instance)
        if inst.ready != ready:
            inst.ready = ready
            self._reschedule(inst)

    def pause(self, instance: str, reason: str) -> None:
        inst = self._get(instance)
        if inst.paused != reason:
            inst.paused = reason
            self._dirty.add(instance)
            self._reschedule(inst)

    def resume(self, instance: str) -> None:
        """Lift a pause and forget the evidence behind auto-pauses (error run, delivery
        outcomes), so the same evidence does not pause the instance again at once."""
        inst = self._get(instance)
        if inst.paused is None:
            return
        inst.paused = None
        inst.health.reset()
        self._dirty.add(instance)
        self._reschedule(inst)

    def paused_reason(self, instance: str) -> str | None:
        return self._get(instance).paused

    # -- messages ---------------------------------------------------------------------------

    def enqueue(self, message: Outgoing) -> None:
        problems = message.problems()
        if problems:
            raise ValueError(f"bad message {message.message_id!r}: {'; '.join(problems)}")
        inst = self._get(message.instance)
        flight = inst.in_flight
        if flight is not None and flight.message.message_id == message.message_id:
            raise ValueError(f"message {message.message_id!r} is in flight")
        known = message.known_contact or inst.counters.is_new_today(message.recipient)
        inst.queue.add(message, self._clock(), known)
        self._reschedule(inst)

    def holds(self, instance: str, message_id: str) -> bool:
        """The message is queued here or in flight."""
        inst = self._instances.get(instance)
        if inst is None:
            return False
        flight = inst.in_flight
        return message_id in inst.queue or (
            flight is not None and flight.message.message_id == message_id
        )

    def cancel(self, instance: str, message_id: str) -> bool:
        """Remove a queued message; False once it was released (or if it is unknown)."""
        inst = self._instances.get(instance)
        if inst is None or inst.queue.remove(message_id) is None:
            return False
        self._reschedule(inst)
        return True

    # -- timing -----------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """The earliest time `due()` may have something to do; None when nothing waits."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, limit: int | None = None) -> list[Decision]:
        """Everything due at `clock()`, at most `limit` decisions (the rest stays due).

        At most one Release per instance; it is in flight until on_sent / on_failed."""
        now = self._clock()
        budget = limit if limit is not None else -1
        out: list[Decision] = []
        visited: list[Instance] = []
        heap = self._heap
        instances, horizon = self._instances, now + _EARLY
        while heap and heap[0][0] <= horizon and budget != len(out):
            woke, token, name = heapq.heappop(heap)
            inst = instances.get(name)
            if inst is None or inst.token != token or inst.armed is None:
                continue  # a stale entry (see `_live`)
            inst.armed = None  # its entry is gone; `_reschedule` pushes a fresh one
            room = _EXPIRY_BATCH if budget < 0 else min(_EXPIRY_BATCH, budget - len(out))
            self._visit(inst, woke, now, room, out)
            visited.append(inst)
        for inst in visited:
            if self._instances.get(inst.name) is inst:
                self._reschedule(inst)
        return out

    def _visit(
        self, inst: Instance, woke: float, now: float, room: int, out: list[Decision]
    ) -> None:
        expired = inst.queue.pop_expired(now, room)
        if expired:
            out.extend(Expiry(message) for message in expired)
        if len(expired) == room or not inst.can_release():
            return
        plan = inst.cached_plan
        if inst.queue.promote(now) or expired:
            plan = inst.plan(now)  # the queue changed since it was armed
        elif plan is not None and now > plan.release_at + _EARLY:
            plan = inst.replan(plan, now)  # the driver is late: only time moved
        if plan is None or plan.release_at > now + _EARLY:
            return
        expires = plan.message.expires_at
        if expires is not None and plan.send_at >= expires:
            return  # it cannot go out in time: it expires at `expires` instead
        problem = inst.health.delivery_problem(now)
        if problem is not None:
            inst.paused = problem
            self._dirty.add(inst.name)
            out.append(AutoPause(inst.name, problem))
            return
        scheduled = inst.planned_release
        if scheduled is None or scheduled > now + _EARLY:
            # Armed for another reason (a scheduled message came due): when would an
            # on-time driver have released?
            ideal = inst.plan(woke)
            scheduled = now if ideal is None else max(woke, ideal.release_at)
        inst.queue.remove(plan.message.message_id)
        inst.in_flight = InFlight(plan.message, plan.known, plan.send_at)
        self._dirty.add(inst.name)
        out.append(Release(plan.message, max(0.0, plan.send_at - now), min(scheduled, now)))

    # -- outcomes ---------------------------------------------------------------------------

    def on_sent(self, instance: str, message_id: str) -> None:
        """The released message went out now: it counts in every window, its recipient is
        known from now on, and the next gap starts now. Ignored for a forgotten instance."""
        inst = self._instances.get(instance)
        if inst is None:
            return
        flight = self._land(inst, message_id)
        now = self._clock()
        inst.record_send(flight, now)
        inst.counters.attempt_ended(now, self._rng)
        if flight.message.tracks_delivery:
            inst.health.sent(message_id, now)
        self._dirty.add(instance)
        self._reschedule(inst)

    def on_failed(self, instance: str, message_id: str, error: str) -> str | None:
        """The released message failed. It is not counted as sent, but the next gap starts
        now. Returns the reason when this failure paused the instance: the third failure in
        a row, or any WhatsApp error 463."""
        inst = self._instances.get(instance)
        if inst is None:
            return None
        self._land(inst, message_id)
        inst.counters.attempt_ended(self._clock(), self._rng)
        reason = inst.health.failed(error)
        if reason is not None and inst.paused is None:
            inst.paused = reason
        else:
            reason = None
        self._dirty.add(instance)
        self._reschedule(inst)
        return reason

    def on_receipt(self, instance: str, message_id: str) -> str | None:
        """A delivery (or read) receipt for a sent message (duplicates and unknown ids are
        ignored). Sends without one within the receipt grace time count as undelivered; when
        too few of the recent sends were delivered, the instance pauses: returns the reason
        when this call paused it. The same check runs before every release, which then
        yields an AutoPause instead, so a driver that never calls this still gets paused."""
        inst = self._instances.get(instance)
        if inst is None:
            return None
        if inst.health.delivered(message_id):
            self._dirty.add(instance)
        problem = inst.health.delivery_problem(self._clock())
        if problem is None or inst.paused is not None:
            return None
        inst.paused = problem
        self._reschedule(inst)
        return problem

    def on_not_sent(self, instance: str, message_id: str) -> None:
        """The released message never reached the engine (cancelled meanwhile, instance not
        running): nothing is counted, no gap starts, and it is not a failure. To send it
        later, enqueue it again."""
        inst = self._instances.get(instance)
        if inst is None:
            return
        self._land(inst, message_id)
        self._dirty.add(instance)
        self._reschedule(inst)

    def _land(self, inst: Instance, message_id: str) -> InFlight:
        flight = inst.in_flight
        if flight is None or flight.message.message_id != message_id:
            raise ValueError(f"message {message_id!r} is not in flight on {inst.name!r}")
        inst.in_flight = None
        return flight

    # -- state ------------------------------------------------------------------------------

    def waiting(self, instance: str, message_id: str | None = None) -> Waiting | None:
        """Why a queued message waits and the earliest time it may be released, from the
        rules `due()` releases by: exact for the instance's next message, a lower bound for
        the others. Without `message_id`: the message the instance releases next (or, when
        none is due, the scheduled one that comes due first). None when the message is not
        queued (in flight, gone, unknown) or the instance is not configured."""
        inst = self._instances.get(instance)
        if inst is None:
            return None
        self._reschedule(inst)  # brings due messages in and plans, as `due()` would
        return inst.waiting(self._clock(), message_id)

    def stats(self, instance: str) -> InstanceStats:
        inst = self._get(instance)
        now = self._clock()
        policy, counters, calendar = inst.policy, inst.counters, inst.calendar
        today = calendar.day(now)
        sent_today, new_today = counters.sent_on(today), counters.new_on(today)
        cap = inst.day_cap(today)
        self._reschedule(inst)  # brings due messages in and plans
        plan = inst.cached_plan
        waiting = inst.waiting(now, None)
        rate, sample = inst.health.delivery_rate(now)
        return InstanceStats(
            ready=inst.ready,
            paused_reason=inst.paused,
            queued=len(inst.queue),
            in_flight=None if inst.in_flight is None else inst.in_flight.message.message_id,
            sent_today=sent_today,
            day_cap=cap,
            warmup_day=inst.warmup_day(today),
            new_contacts_today=new_today,
            remaining_minute=max(0, policy.per_minute - counters.minute.count(now)),
            remaining_hour=max(0, policy.per_hour - counters.hour.count(now)),
            remaining_today=max(0, cap - sent_today),
            remaining_new_contacts_today=max(0, policy.new_contacts_per_day - new_today),
            next_release_at=None if plan is None else max(now, plan.release_at),
            next_send_at=plan.send_at
            if plan is not None
            else (None if waiting is None else waiting.next_attempt_at),
            waiting=waiting,
            delivery_rate=rate,
            delivery_sample=sample,
            failures_in_a_row=inst.health.failures_in_a_row,
        )

    def export_state(self, instance: str) -> dict[str, Any]:
        """The counters that must survive a restart, as JSON values: sends of the last hour,
        the local day's totals and new contacts, pacing, error run, receipts awaited and
        recent delivery outcomes, the pause reason, and the message in flight if any."""
        return self._get(instance).export()

    def import_state(self, instance: str, state: dict[str, Any]) -> None:
        """Restore `export_state` output into a configured instance (before its messages are
        enqueued again). A message that was in flight is counted as sent at its planned
        time and is not released again. Raises StateError (a ValueError) on a malformed
        state, leaving the instance as it was."""
        inst = self._get(instance)
        inst.restore(state, self._rng)
        self._reschedule(inst)

    def dirty(self) -> set[str]:
        """Instances whose exported state changed since it was last saved. They stay dirty
        until `mark_saved`: a save that fails is tried again."""
        return set(self._dirty)

    def mark_saved(self, instance: str) -> None:
        """The instance's state was just exported and saved: not dirty until it changes."""
        self._dirty.discard(instance)

    def instances(self) -> list[str]:
        return list(self._instances)

    def configured(self, instance: str) -> bool:
        return instance in self._instances

    # -- internals --------------------------------------------------------------------------

    def _get(self, instance: str) -> Instance:
        inst = self._instances.get(instance)
        if inst is None:
            raise KeyError(f"instance {instance!r} is not configured in the scheduler")
        return inst

    def _live(self, entry: tuple[float, int, str]) -> bool:
        inst = self._instances.get(entry[2])
        return inst is not None and inst.token == entry[1] and inst.armed is not None

    def _reschedule(self, inst: Instance) -> None:
        wake, planned = inst.wake(self._clock())
        inst.planned_release = planned
        if wake == inst.armed:
            return
        inst.armed = wake
        if wake is None:
            inst.token = 0
            return
        inst.token = next(self._tokens)
        heapq.heappush(self._heap, (wake, inst.token, inst.name))
        if len(self._heap) > 2 * len(self._instances) + _HEAP_SLACK:
            self._heap = [
                (i.armed, i.token, i.name) for i in self._instances.values() if i.armed is not None
            ]
            heapq.heapify(self._heap)
