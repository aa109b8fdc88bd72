"""The neonize engine renews presence subscriptions on Connected, offline: a Connected event
delivered through neonize's own callback (as Go calls it) makes the engine call neonize's
SubscribePresence again, oldest contact first. Offline whatsmeow answers that the device is
not connected, so the renewal stops there and keeps the contacts for the next Connected; a
logout forgets them. Runs in its own interpreter (tests/scenarios.py)."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

from tests.scenarios import Report, Scenario, play, run_main
from tests.test_neonize_inbound import deliver

with warnings.catch_warnings():
    # neonize's import leaks two `uname -a` pipes; pytest would fail on their warnings.
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto import Neonize_pb2 as pb

ANA = "5511988887777@s.whatsapp.net"
BIA = "5511977776666@s.whatsapp.net"


def test_a_connected_event_renews_the_subscriptions(tmp_path: Path) -> None:
    report = play("tests.test_neonize_presence_renewal", "renew", tmp_path)

    assert report["asked_before_connected"] == []
    assert report["event_types"][0] == "Connected"
    # The oldest contact first, through neonize's real call, which answered "not connected".
    assert report["asked_after_connected"] == ["5511988887777"]
    assert "not connected" in report["refused"]
    assert report["remembered_after_renewal"] == [ANA, BIA]  # for the next Connected
    assert report["remembered_after_logout"] == []


async def renew_scenario(workdir: Path) -> Report:
    from tests.test_neonize_offline import Events, FakeProxy, spec
    from zapgate.sessions import neonize_calls
    from zapgate.sessions.neonize_engine import NeonizeEngine

    asked: list[str] = []
    refused: list[str] = []
    subscribe = neonize_calls.subscribe_presence

    def recording(client: Any, *, key: str, contact: Any) -> None:
        asked.append(str(contact.User))
        try:
            subscribe(client, key=key, contact=contact)
        except Exception as error:  # offline, whatsmeow refuses it
            refused.append(str(error))
            raise

    neonize_calls.subscribe_presence = recording
    events = Events()
    engine = NeonizeEngine(events)
    async with FakeProxy(hold=3.0) as slow:
        dialing = spec(workdir, "acme/renew", slow.url("socks5"))
        await engine.start(dialing)
        await slow.reached.wait()
        # What SubscribePresence calls that WhatsApp accepted left behind (none can be
        # accepted offline).
        for contact in (ANA, BIA):
            engine._presence.remember(dialing.key, contact)
        await asyncio.sleep(0.2)
        before = list(asked)
        client = engine._sessions[dialing.key].client
        deliver(client, pb.Connected(status=True))
        async with asyncio.timeout(30):  # guards a hang only
            while not refused or engine._tasks:
                await asyncio.sleep(0.05)  # the renewal runs on a call thread: poll
        after = list(asked)
        remembered = engine._presence.of(dialing.key)
        await engine.logout(dialing.key)
    report = {
        "asked_before_connected": before,
        "asked_after_connected": after,
        "refused": " ".join(refused),
        "event_types": [type(event).__name__ for event in events.items],
        "remembered_after_renewal": remembered,
        "remembered_after_logout": engine._presence.of(dialing.key),
    }
    await engine.close()
    return report


SCENARIOS: dict[str, Scenario] = {"renew": renew_scenario}


if __name__ == "__main__":
    run_main(SCENARIOS)
