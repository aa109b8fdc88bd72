"""Cluster mode: wakes this node's subscribers and webhook delivery loops when another node
appends events. Every transaction that inserts events notifies EVENTS_CHANNEL on commit (a
trigger on `events`, migration 0017, so whichever writer inserted them); this node LISTENs
on a connection of its own and wakes the event log's waiters on each notification, so a
Subscribe here sees another node's event about as soon as it is committed.

A notification can be missed while the listening connection is down (PostgreSQL keeps none
for a connection that is not listening). So the listener is supervised: a closed or silent
connection (checked every CHECK_SECONDS) raises, and the supervision reconnects it with
backoff; meanwhile, and once after every (re)connect, the waiters are woken by a poll
(every GAP_POLL_SECONDS), and a slow safety poll (every SAFETY_POLL_SECONDS) goes on even
while listening, against anything else that could lose one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.events.log import EventLog

log = logging.getLogger(__name__)

SAFETY_POLL_SECONDS = 5.0
GAP_POLL_SECONDS = 0.5  # while not listening: the pace cluster mode polled at before
CHECK_SECONDS = 5.0  # how often the listening connection is asked for a sign of life
CHECK_TIMEOUT_SECONDS = 5.0
APPLICATION_NAME = "zapgate event wakeups"  # then the node's id
# Notified by the trigger of migration 0017 on every commit that inserted events.
EVENTS_CHANNEL = "zapgate_events"

Connect = Callable[[], Awaitable[Any]]  # an asyncpg connection (typed loosely: asyncpg's stubs)
OnNotice = Callable[[str], None]  # called with the notification's payload, on the loop


class WakeupObserver(Protocol):
    def woken(self, source: str) -> None:
        """`notification` (another node's commit) or `poll` (the safety or gap poll)."""
        ...


class NoWakeupObserver:
    def woken(self, source: str) -> None:
        pass


class CrossNodeWakeups:
    def __init__(
        self,
        events: EventLog,
        connect: Connect,
        observer: WakeupObserver | None = None,
        *,
        safety_poll_seconds: float = SAFETY_POLL_SECONDS,
        gap_poll_seconds: float = GAP_POLL_SECONDS,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self._events = events
        self._connect = connect
        self._observer = observer or NoWakeupObserver()
        self._safety_poll_seconds = safety_poll_seconds
        self._gap_poll_seconds = gap_poll_seconds
        self._check_seconds = check_seconds
        self.listening = False
        self._listening_changed = asyncio.Event()
        self._channels: dict[str, OnNotice] = {EVENTS_CHANNEL: lambda _payload: self._notified()}

    @classmethod
    def for_database(
        cls,
        events: EventLog,
        database: AsyncEngine,
        observer: WakeupObserver | None = None,
        node_id: str = "",
    ) -> CrossNodeWakeups:
        """Listens on a connection of its own to the gateway's PostgreSQL database."""
        dsn = database.url.set(drivername="postgresql").render_as_string(hide_password=False)
        # Named for operators' pg_stat_activity (PostgreSQL keeps 63 bytes of it).
        named = {"application_name": f"{APPLICATION_NAME} {node_id}".strip()[:63]}
        return cls(events, lambda: asyncpg.connect(dsn, server_settings=named), observer)

    def on_channel(self, channel: str, on_notice: OnNotice) -> None:
        """Also listens on `channel`, on the same connection, from the next (re)connect
        (register before the listener starts). Nothing calls `on_notice` while the
        connection is down: the channel's owner needs a fallback of its own."""
        if channel in self._channels:
            raise ValueError(f"channel {channel!r} already has a listener")
        self._channels[channel] = on_notice

    async def listen(self) -> None:
        """Supervised: runs until the connection is lost, then raises (and is restarted)."""
        conn = await asyncio.wait_for(self._connect(), CHECK_TIMEOUT_SECONDS)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            for channel, on_notice in self._channels.items():
                await conn.add_listener(channel, _payload_to(on_notice))
            self._set_listening(True)
            self._wake("poll")  # whatever was appended while nobody listened
            while True:
                with_timeout = asyncio.timeout(self._check_seconds)
                try:
                    async with with_timeout:
                        await lost.wait()
                except TimeoutError:
                    pass
                if lost.is_set() or conn.is_closed():
                    raise ConnectionError("the connection listening for events was closed")
                await asyncio.wait_for(conn.fetchval("SELECT 1"), CHECK_TIMEOUT_SECONDS)
        finally:
            self._set_listening(False)
            conn.terminate()  # no goodbye on a connection that may be dead

    async def poll(self) -> None:
        """Supervised: wakes the waiters slowly while listening, quickly while not."""
        while True:
            pace = self._safety_poll_seconds if self.listening else self._gap_poll_seconds
            changed = self._listening_changed
            try:
                async with asyncio.timeout(pace):
                    await changed.wait()
                continue  # listening started or stopped: the pace changes now
            except TimeoutError:
                pass
            self._wake("poll")

    def _notified(self) -> None:
        self._wake("notification")

    def _wake(self, source: str) -> None:
        self._events.committed()
        self._observer.woken(source)

    def _set_listening(self, listening: bool) -> None:
        if listening == self.listening:
            return
        self.listening = listening
        if listening:
            log.info("listening for other nodes' events")
        else:
            log.warning(
                "stopped listening for other nodes' events: polling every %.1fs",
                self._gap_poll_seconds,
            )
        self._listening_changed.set()
        self._listening_changed = asyncio.Event()


def _payload_to(on_notice: OnNotice) -> Callable[[object, int, str, str], None]:
    """asyncpg's listener callback (connection, pid, channel, payload), on the loop; one
    channel's failing callback never ends the listening of the others."""

    def callback(_conn: object, _pid: int, channel: str, payload: str) -> None:
        try:
            on_notice(payload)
        except Exception:
            log.exception("handling a notification on %s failed", channel)

    return callback
