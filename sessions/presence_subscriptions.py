"""The contacts each instance subscribed to the presence of, kept by its engine so they can be
renewed: WhatsApp (and whatsmeow) forget presence subscriptions when the connection drops,
and an engine's reconnect is a new connection. On each Connected, the engine subscribes
again to every contact it remembers for the instance.

Kept in the engine's memory: a worker restart or a gateway restart forgets them (the
instance's client subscribes again then). A logout forgets them too (the next pairing may
be another account). Renewals are paced like the calls they repeat (MessageService paces
SubscribePresence: a burst, then one a second): a reconnect never bursts hundreds of
subscriptions at WhatsApp, which is what presence-scraping tools do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from zapgate.sessions.errors import EngineError, NotConnected, NotRunning
from zapgate.sessions.events import InstanceKey

log = logging.getLogger(__name__)

# Contacts remembered per instance (the most recent subscriptions win).
MAX_REMEMBERED = 512
# Renewals after a reconnect: this many at once, then one per RENEW_GAP_SECONDS.
RENEW_BURST = 10
RENEW_GAP_SECONDS = 1.0


class PresenceSubscriptions:
    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._sleep = sleep
        # instance -> contact JIDs, oldest first (a dict keeps insertion order)
        self._by_instance: dict[InstanceKey, dict[str, None]] = {}

    def remember(self, key: InstanceKey, contact_jid: str) -> None:
        contacts = self._by_instance.setdefault(key, {})
        contacts.pop(contact_jid, None)  # a repeated subscription becomes the newest
        contacts[contact_jid] = None
        if len(contacts) > MAX_REMEMBERED:
            del contacts[next(iter(contacts))]

    def forget(self, key: InstanceKey) -> None:
        self._by_instance.pop(key, None)

    def of(self, key: InstanceKey) -> list[str]:
        return list(self._by_instance.get(key, {}))

    async def renew(
        self, key: InstanceKey, subscribe: Callable[[str], Awaitable[None]]
    ) -> list[str]:
        """Subscribes again to each contact remembered for `key`, paced; returns those
        renewed. Stops when the instance is no longer connected (the next Connected renews
        them all again); a contact WhatsApp refuses is logged and skipped."""
        renewed: list[str] = []
        for index, contact_jid in enumerate(self.of(key)):
            if index >= RENEW_BURST:
                await self._sleep(RENEW_GAP_SECONDS)
            try:
                await subscribe(contact_jid)
            except (NotRunning, NotConnected):
                break
            except EngineError as error:
                log.warning(
                    "%s: could not renew the presence subscription to %s: %s",
                    key,
                    contact_jid,
                    error,
                )
                continue
            renewed.append(contact_jid)
        if renewed:
            log.info("%s: renewed %d presence subscriptions", key, len(renewed))
        return renewed
