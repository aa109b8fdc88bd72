"""What every neonize engine call stands on: the sessions it hosts, the readers-writer gate
(docs/engine.md, hazard 1) and the threads its short calls run on. `_read` runs one neonize
call as a reader of the gate, and refuses it while the client is still dialing or already
torn down (either would block or crash Go). The engine's calls (neonize_messaging.py,
neonize_group_ops.py) and its lifecycle (neonize_engine.py) build on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from zapgate.sessions.engine import Engine, EventSink
from zapgate.sessions.errors import EngineError, NotConnected, NotRunning
from zapgate.sessions.events import InstanceKey
from zapgate.sessions.gate import Gate
from zapgate.sessions.neonize_session import Session, neonize_client

T = TypeVar("T")

CALL_THREADS = 8


class NeonizeReader(Engine):
    def __init__(self, sink: EventSink, *, call_threads: int = CALL_THREADS) -> None:
        super().__init__(sink)
        self._gate = Gate()
        # Short neonize calls and store wipes; connects never run here.
        self._calls = ThreadPoolExecutor(call_threads, thread_name_prefix="neonize-call")
        self._sessions: dict[InstanceKey, Session] = {}  # hosted now

    @property
    def gate(self) -> Gate:
        return self._gate

    def _hosted(self, key: InstanceKey) -> Session:
        session = self._sessions.get(key)
        if session is None:
            raise NotRunning(f"{key} is not running on this engine; start it first")
        return session

    def _sending(self, key: InstanceKey) -> Session:
        return self._connected(key, "send")

    def _connected(self, key: InstanceKey, doing: str) -> Session:
        session = self._hosted(key)
        if not session.connected:
            raise NotConnected(f"{key} is not connected to WhatsApp yet; {doing} once it is")
        return session

    async def _read(self, session: Session, call: Callable[[Any], T]) -> T:
        """Runs a neonize call as a reader of the gate, on a call thread."""
        return await self._in_thread(self._read_now, session, call)

    def _read_now(self, session: Session, call: Callable[[Any], T]) -> T:
        with self._gate.reading():
            if session.torn_down:  # its Go client is gone: calls on it would crash Go
                raise NotRunning(f"{session.key} is not running")
            if not session.past_dial:  # the call would wait for the dial, holding the gate
                raise NotConnected(f"{session.key} is still connecting")
            try:
                return call(session.client)
            except neonize_client.NeonizeError as error:
                raise EngineError(f"WhatsApp refused ({session.key}): {error}") from error

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._calls, function, *args)
