"""What a Connect stream tells its client, as zapgate types (converted to protobuf by the
service), and the fan-out to every client watching the same instance."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from zapgate.gateway.store.instances import InstanceRecord


@dataclass(frozen=True)
class QrUpdate:
    code: str
    index: int
    expire_time_us: int


@dataclass(frozen=True)
class PairCodeUpdate:
    code: str
    expire_time_us: int


@dataclass(frozen=True)
class StateUpdate:
    state: int
    reason: int
    detail: str


@dataclass(frozen=True)
class FinalUpdate:
    outcome: int  # ConnectOutcome
    record: InstanceRecord


Update = QrUpdate | PairCodeUpdate | StateUpdate | FinalUpdate


@dataclass
class Watchers:
    """Clients following one instance. Late joiners first get the codes on show, so two
    clients watching one pairing see the same codes."""

    queues: set[asyncio.Queue[Update]] = field(default_factory=set)
    qr: QrUpdate | None = None
    pair_code: PairCodeUpdate | None = None

    def join(self) -> asyncio.Queue[Update]:
        queue: asyncio.Queue[Update] = asyncio.Queue()
        for shown in (self.qr, self.pair_code):
            if shown is not None:
                queue.put_nowait(shown)
        self.queues.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[Update]) -> None:
        self.queues.discard(queue)

    def publish(self, update: Update) -> None:
        if isinstance(update, QrUpdate):
            self.qr = update
        elif isinstance(update, PairCodeUpdate):
            self.pair_code = update
        elif isinstance(update, FinalUpdate):
            self.qr = self.pair_code = None
        for queue in self.queues:
            queue.put_nowait(update)

    def __bool__(self) -> bool:
        return bool(self.queues)
