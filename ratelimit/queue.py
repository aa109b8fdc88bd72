"""One instance's waiting messages, ordered for release in O(log n) per operation.

- Messages whose `not_before` is still ahead wait in a heap by `not_before`; they join their
  recipient's lane when they become due (so a message scheduled for tomorrow never holds up
  today's messages to the same person).
- A *lane* holds one recipient's due messages in enqueue order (`seq`). Only its head can be
  released, which keeps every recipient's messages in order. A lane's rank is
  (highest priority among its messages, seq of its head): priority inheritance, so an urgent
  message lifts the older messages ahead of it instead of waiting behind a backlog.
- Lanes are ranked in two heaps: recipients the instance knows, and new contacts. When the
  day's new-contact cap is used up, only the first heap is looked at.
- Removal (release, cancel, expiry) is lazy: heap entries are checked against the live
  entries when they reach the top, and a heap is rebuilt once it holds more stale entries
  than live ones, so memory stays proportional to what is queued.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from zapgate.ratelimit.messages import Outgoing

_COMPACT_SLACK = 64


class _Entry:
    __slots__ = ("due", "message")

    def __init__(self, message: Outgoing) -> None:
        self.message = message
        self.due = False


class _Lane:
    __slots__ = ("due", "key", "known", "members", "priorities", "priority_heap", "version")

    def __init__(self, known: bool) -> None:
        self.known = known
        self.due: list[tuple[int, str]] = []  # (seq, message id), lazy
        self.priorities: dict[int, int] = {}  # priority -> due messages with it
        self.priority_heap: list[int] = []  # negated priorities, lazy
        self.members = 0  # queued messages to this recipient, due or not
        self.key: tuple[int, int] | None = None  # (-priority, head seq) while any is due
        self.version = 0


# (-priority, head seq, lane version, recipient)
_Head = tuple[int, int, int, str]


class MessageQueue:
    __slots__ = ("_entries", "_expiry", "_future", "_heads", "_lanes", "_versions")

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._future: list[tuple[float, int, str]] = []  # (not_before, seq, id), lazy
        self._expiry: list[tuple[float, int, str]] = []  # (expires_at, seq, id), lazy
        self._lanes: dict[str, _Lane] = {}
        self._heads: dict[bool, list[_Head]] = {True: [], False: []}  # by lane.known
        self._versions = itertools.count(1)  # unique across lanes, so a reborn lane's
        # entries never match a dead lane's stale ones

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._entries

    def __iter__(self) -> Iterator[Outgoing]:
        return (entry.message for entry in self._entries.values())

    def get(self, message_id: str) -> Outgoing | None:
        entry = self._entries.get(message_id)
        return None if entry is None else entry.message

    def is_due(self, message_id: str) -> bool:
        """Queued and its `not_before` has come (it is in its recipient's lane)."""
        entry = self._entries.get(message_id)
        return entry is not None and entry.due

    def heads_lane(self, message_id: str) -> bool:
        """Queued, due, and no earlier due message to the same recipient waits."""
        entry = self._entries.get(message_id)
        if entry is None or not entry.due:
            return False
        head = self._lane_head(self._lanes[entry.message.recipient])
        return head is not None and head.message_id == message_id

    def is_known(self, message_id: str) -> bool:
        """Queued, and its recipient is not a new contact."""
        entry = self._entries.get(message_id)
        return entry is not None and self._lanes[entry.message.recipient].known

    def next_scheduled(self) -> Outgoing | None:
        """The not-yet-due message that comes due first."""
        if self.next_promotion() is None:
            return None
        return self._entries[self._future[0][2]].message

    def add(self, message: Outgoing, now: float, known: bool) -> None:
        """Queue a message; `known`: its recipient is not a new contact."""
        if message.message_id in self._entries:
            raise ValueError(f"message {message.message_id!r} is already queued")
        entry = _Entry(message)
        self._entries[message.message_id] = entry
        lane = self._lanes.get(message.recipient)
        if lane is None:
            lane = self._lanes[message.recipient] = _Lane(known)
        elif known and not lane.known:
            self._make_known(lane, message.recipient)
        lane.members += 1
        if message.expires_at is not None:
            heapq.heappush(self._expiry, (message.expires_at, message.seq, message.message_id))
        if message.not_before <= now:
            self._make_due(entry, lane)
        else:
            heapq.heappush(self._future, (message.not_before, message.seq, message.message_id))

    def remove(self, message_id: str) -> Outgoing | None:
        """Take a queued message out (released, cancelled or expired); None if not queued."""
        entry = self._entries.pop(message_id, None)
        if entry is None:
            return None
        message = entry.message
        lane = self._lanes[message.recipient]
        lane.members -= 1
        if entry.due:
            left = lane.priorities[message.priority] - 1
            if left:
                lane.priorities[message.priority] = left
            else:
                del lane.priorities[message.priority]
        if lane.members == 0:
            del self._lanes[message.recipient]
        elif entry.due:
            self._refresh(lane, message.recipient)
        self._compact()
        return message

    def mark_known(self, recipient: str) -> None:
        lane = self._lanes.get(recipient)
        if lane is not None and not lane.known:
            self._make_known(lane, recipient)

    def promote(self, now: float) -> bool:
        """Move the messages whose `not_before` has come into their lanes; True if any."""
        future, moved = self._future, False
        while future and future[0][0] <= now:
            _, seq, message_id = heapq.heappop(future)
            entry = self._entries.get(message_id)
            if entry is not None and not entry.due and entry.message.seq == seq:
                self._make_due(entry, self._lanes[entry.message.recipient])
                moved = True
        return moved

    def next_promotion(self) -> float | None:
        future = self._future
        while future:
            _, seq, message_id = future[0]
            entry = self._entries.get(message_id)
            if entry is not None and not entry.due and entry.message.seq == seq:
                return future[0][0]
            heapq.heappop(future)
        return None

    def next_expiry(self) -> float | None:
        expiry = self._expiry
        while expiry:
            _, seq, message_id = expiry[0]
            entry = self._entries.get(message_id)
            if entry is not None and entry.message.seq == seq:
                return expiry[0][0]
            heapq.heappop(expiry)
        return None

    def pop_expired(self, now: float, limit: int) -> list[Outgoing]:
        """Remove and return up to `limit` messages whose expiry is at or before `now`."""
        expired: list[Outgoing] = []
        if not self._expiry or self._expiry[0][0] > now:
            return expired  # nothing can have expired (the usual case: one comparison)
        while len(expired) < limit:
            at = self.next_expiry()
            if at is None or at > now:
                break
            _, _, message_id = heapq.heappop(self._expiry)
            message = self.remove(message_id)
            if message is not None:
                expired.append(message)
        return expired

    def best(self, allow_new: bool) -> tuple[Outgoing, bool] | None:
        """The message to release next and whether its recipient is known; new contacts
        only when `allow_new`."""
        known = self._top(True)
        new = self._top(False) if allow_new else None
        head = known if new is None or (known is not None and known < new) else new
        if head is None:
            return None
        lane = self._lanes[head[3]]
        message = self._lane_head(lane)
        assert message is not None  # a lane with a key has a due head
        return message, lane.known

    def has_due_new_contacts(self) -> bool:
        return self._top(False) is not None

    def _top(self, known: bool) -> _Head | None:
        heap = self._heads[known]
        while heap:
            head = heap[0]
            lane = self._lanes.get(head[3])
            if lane is not None and lane.version == head[2] and lane.known == known:
                return head
            heapq.heappop(heap)
        return None

    def _make_due(self, entry: _Entry, lane: _Lane) -> None:
        message = entry.message
        entry.due = True
        heapq.heappush(lane.due, (message.seq, message.message_id))
        count = lane.priorities.get(message.priority, 0)
        lane.priorities[message.priority] = count + 1
        if count == 0:
            heapq.heappush(lane.priority_heap, -message.priority)
        self._refresh(lane, message.recipient)

    def _make_known(self, lane: _Lane, recipient: str) -> None:
        lane.known = True
        lane.version = next(self._versions)
        if lane.key is not None:
            self._push_head(lane, recipient)

    def _refresh(self, lane: _Lane, recipient: str) -> None:
        """Recompute a lane's rank after a change; re-rank it only if the rank moved."""
        head = self._lane_head(lane)
        key = None if head is None else (-self._lane_priority(lane), head.seq)
        if key != lane.key:
            lane.key = key
            lane.version = next(self._versions)
            if key is not None:
                self._push_head(lane, recipient)

    def _push_head(self, lane: _Lane, recipient: str) -> None:
        assert lane.key is not None
        heapq.heappush(self._heads[lane.known], (*lane.key, lane.version, recipient))

    def _lane_head(self, lane: _Lane) -> Outgoing | None:
        while lane.due:
            seq, message_id = lane.due[0]
            entry = self._entries.get(message_id)
            if entry is not None and entry.due and entry.message.seq == seq:
                return entry.message
            heapq.heappop(lane.due)
        return None

    def _lane_priority(self, lane: _Lane) -> int:
        heap = lane.priority_heap
        while heap:
            if lane.priorities.get(-heap[0], 0) > 0:
                return -heap[0]
            heapq.heappop(heap)
        raise AssertionError("a lane with a due head has a priority")

    def _compact(self) -> None:
        """Rebuild any heap that holds more stale entries than live ones."""
        live = len(self._entries)
        if len(self._future) > 2 * live + _COMPACT_SLACK:
            self._future = [
                (e.message.not_before, e.message.seq, e.message.message_id)
                for e in self._entries.values()
                if not e.due
            ]
            heapq.heapify(self._future)
        if len(self._expiry) > 2 * live + _COMPACT_SLACK:
            self._expiry = [
                (e.message.expires_at, e.message.seq, e.message.message_id)
                for e in self._entries.values()
                if e.message.expires_at is not None
            ]
            heapq.heapify(self._expiry)
        most = 2 * len(self._lanes) + _COMPACT_SLACK
        heads = self._heads
        if len(heads[True]) <= most and len(heads[False]) <= most:
            return
        for known, heap in heads.items():
            if len(heap) > most:
                fresh = [
                    (*lane.key, lane.version, recipient)
                    for recipient, lane in self._lanes.items()
                    if lane.known == known and lane.key is not None
                ]
                heapq.heapify(fresh)
                self._heads[known] = fresh
