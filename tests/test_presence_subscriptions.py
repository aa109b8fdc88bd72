"""The presence subscriptions an engine renews after a reconnect (both engines share this):
the most recent ones are kept, a logout forgets them, and a renewal is paced in virtual time
(a burst, then one a second), stops when the instance is no longer connected and skips a
contact WhatsApp refuses."""

from __future__ import annotations

from itertools import pairwise

from zapgate.sessions.errors import EngineError, NotConnected
from zapgate.sessions.presence_subscriptions import (
    MAX_REMEMBERED,
    RENEW_BURST,
    RENEW_GAP_SECONDS,
    PresenceSubscriptions,
)

KEY = "acme/sales"


def jid(n: int) -> str:
    return f"55119{n:08d}@s.whatsapp.net"


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_newest_subscriptions_are_kept_per_instance() -> None:
    subscriptions = PresenceSubscriptions()
    for n in range(MAX_REMEMBERED + 2):
        subscriptions.remember(KEY, jid(n))
    subscriptions.remember(KEY, jid(2))  # asked again: now the newest
    subscriptions.remember("acme/other", jid(0))
    kept = subscriptions.of(KEY)
    assert len(kept) == MAX_REMEMBERED
    assert kept[0] == jid(3)  # 0 and 1 were the oldest
    assert kept[-1] == jid(2)
    subscriptions.forget(KEY)
    assert subscriptions.of(KEY) == []
    assert subscriptions.of("acme/other") == [jid(0)]


async def test_a_renewal_is_paced_after_a_burst() -> None:
    clock = VirtualTime()
    subscriptions = PresenceSubscriptions(sleep=clock.sleep)
    count = RENEW_BURST + 5
    for n in range(count):
        subscriptions.remember(KEY, jid(n))
    sent: list[tuple[float, str]] = []

    async def subscribe(contact: str) -> None:
        sent.append((clock.now, contact))

    renewed = await subscriptions.renew(KEY, subscribe)
    assert renewed == [jid(n) for n in range(count)]
    assert [at for at, _ in sent[:RENEW_BURST]] == [0.0] * RENEW_BURST
    times = [at for at, _ in sent[RENEW_BURST - 1 :]]
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert gaps == [RENEW_GAP_SECONDS] * 5


async def test_a_renewal_stops_when_disconnected_and_skips_a_refusal() -> None:
    subscriptions = PresenceSubscriptions(sleep=VirtualTime().sleep)
    for n in range(4):
        subscriptions.remember(KEY, jid(n))
    asked: list[str] = []

    async def subscribe(contact: str) -> None:
        asked.append(contact)
        if contact == jid(1):
            raise EngineError("WhatsApp refused (acme/sales): bad jid")
        if contact == jid(3):
            raise NotConnected("acme/sales is not connected to WhatsApp yet")

    renewed = await subscriptions.renew(KEY, subscribe)
    assert asked == [jid(0), jid(1), jid(2), jid(3)]
    assert renewed == [jid(0), jid(2)]
    assert subscriptions.of(KEY) == [jid(n) for n in range(4)]  # kept for the next connect
