"""The real neonize engine (sessions/neonize_engine.py), offline: the Go library loads, builds
its store, dials, fails with WhatsApp out of reach, and keeps serving while it does.

neonize's Go side can kill its whole process (docs/engine.md, hazard 1), so every scenario runs
in a fresh interpreter, like an engine worker: `python -m tests.test_neonize_offline SCENARIO
WORKDIR` plays it and writes WORKDIR/report.json, which the test then checks. Proxies are
local servers started by the scenario, so no scenario depends on the network (except the
DNS one, which needs its absence)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests import scenarios
from tests.scenarios import Report, Scenario, run_main
from zapgate.sessions.engine import InstanceSpec, Media, OutgoingContent
from zapgate.sessions.errors import EngineError, SendRefused
from zapgate.sessions.events import ConnectFailed, EngineEvent

EVENT_TIMEOUT = 90.0  # generous: a stalled DNS query alone takes 5 s
MANY = 40
PHONE = "+5511999998888"


# -- the tests (pytest process) -----------------------------------------------------------------


def play(scenario: str, workdir: Path) -> Report:
    """Runs one of this module's scenarios in its own interpreter."""
    return scenarios.play("tests.test_neonize_offline", scenario, workdir)


def files_under(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}


def test_start_creates_and_migrates_the_store_at_the_store_path(tmp_path: Path) -> None:
    report = play("store", tmp_path)

    store = Path(report["store"])
    assert store == tmp_path / "runtime" / "acme-store" / "session.db"
    assert files_under(tmp_path) == {"report.json", "runtime/acme-store/session.db"}
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    # Opened only now, from this process: the worker that ran Go's SQLite has exited.
    with sqlite3.connect(store) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        (version,) = db.execute("SELECT version FROM whatsmeow_version").fetchone()
        (devices,) = db.execute("SELECT count(*) FROM whatsmeow_device").fetchone()
    db.close()
    assert {"whatsmeow_device", "whatsmeow_identity_keys", "whatsmeow_sessions"} <= tables
    assert version >= 1
    assert devices == 0  # migrated, not paired
    assert [event["type"] for event in report["events"]] == ["ConnectFailed"]
    assert report["hosted"] == 0


def test_a_failed_dns_lookup_is_reported_as_connect_failed(tmp_path: Path) -> None:
    try:
        socket.getaddrinfo("web.whatsapp.com", 443)
    except OSError:
        pass
    else:
        pytest.skip("web.whatsapp.com resolves here; this test needs a machine without DNS")

    report = play("dns", tmp_path)

    [event] = report["events"]
    assert event["type"] == "ConnectFailed"
    assert event["key"] == "acme/dns"
    assert "lookup web.whatsapp.com" in event["detail"]  # the resolver's own error
    assert report["hosted"] == 0
    assert report["lingering"] == 0


def test_forty_failing_connects_do_not_starve_other_calls(tmp_path: Path) -> None:
    report = play("many", tmp_path)

    assert report["hosted_at_start"] == MANY
    failed = [event for event in report["events"] if event["type"] == "ConnectFailed"]
    assert sorted(event["key"] for event in failed) == sorted(report["keys"])
    assert all("EOF" in event["detail"] for event in failed)
    assert report["proxy_connections"] == MANY
    answers = report["answers"]
    assert len(answers) >= 2
    assert not any(answer["connected"] for answer in answers)
    # Each connect held the gate for its whole dial, yet the first call got through while
    # most of them were still queued: the gate lets it in after one write phase.
    assert answers[0]["failed_so_far"] < MANY // 2
    assert report["hosted_after"] == 0
    assert report["lingering_after"] == 0


def test_each_instance_dials_through_its_own_proxy(tmp_path: Path) -> None:
    report = play("proxy", tmp_path)

    events = {event["key"]: event for event in report["events"]}
    socks, http = report["socks"], report["http"]
    [greeting] = [bytes.fromhex(first) for first in socks["first_bytes"]]
    assert greeting[0] == 0x05  # SOCKS5
    assert 0x02 in greeting[2:]  # offers username/password: the URL's credentials arrived
    [request] = [bytes.fromhex(first) for first in http["first_bytes"]]
    assert request.startswith(b"CONNECT web.whatsapp.com:443 HTTP/1.1\r\n")
    assert f"127.0.0.1:{socks['port']}" in events["acme/socks"]["detail"]
    assert 'unsupported proxy scheme "ftp"' in events["acme/ftp"]["detail"]
    assert {event["type"] for event in events.values()} == {"ConnectFailed"}


def test_the_engine_lifecycle(tmp_path: Path) -> None:
    report = play("lifecycle", tmp_path)

    assert "may not contain" in report["bad_store_path"]
    assert "not running on this engine" in report["pair_not_hosted"]
    assert "not an E.164 phone number" in report["pair_bad_phone"]
    assert "first QR code" in report["pair_before_qr"]
    assert report["stopped_while_queued"] == {"store": False, "hosted": 1, "connections": 0}
    assert report["connecting"] == {"hosted": 1, "connected": False, "hosted_after_restart": 1}
    # Some neonize calls never return: their threads must not keep a worker from exiting.
    assert report["dialing_threads"] == {"count": 2, "daemon": True}
    assert report["stopped_while_dialing"] == {"hosted": 0, "events": [], "lingering": 0}
    assert [event["type"] for event in report["restarted"]] == ["ConnectFailed"] * 2
    assert report["logout"] == {"store_before": True, "store_after": False, "hosted": 0}
    assert "never started" in report["logout_unknown"]
    assert "closed" in report["start_after_close"]


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return play("send", tmp_path_factory.mktemp("send"))


def test_sending_needs_a_connected_instance(sent: Report) -> None:
    engine = sent["engine"]
    for call in ("send", "typing"):
        assert engine[f"{call}_not_hosted"] == {
            "type": "NotRunning",
            "message": "acme/nobody is not running on this engine; start it first",
        }
        assert engine[f"{call}_dialing"] == {
            "type": "NotConnected",
            "message": "acme/dialing is not connected to WhatsApp yet; send once it is",
        }
    # What concerns the message is refused before the instance is even looked at.
    assert engine["bad_recipient"]["type"] == "SendRefused"
    assert engine["bad_recipient"]["code"] == "invalid_recipient"
    assert engine["empty_text"]["code"] == "invalid_content"
    assert engine["hosted_after"] == 0


def test_whatsmeow_parses_every_message_kind_and_its_errors_map_to_engine_errors(
    sent: Report,
) -> None:
    # Go unmarshals the recipient, then the message (a failure there is a protobuf error),
    # and only then calls whatsmeow, which finds no client: every kind got that far.
    whatsmeow = sent["whatsmeow"]
    assert sorted(whatsmeow["deliver"]) == sorted(SEND_KINDS)
    down = "it is not connected to WhatsApp"
    for result in whatsmeow["deliver"].values():
        assert result == {
            "type": "NotConnected",
            "message": f"acme/bare could not send: {down} (client is nil)",
        }
    # An upload that fails because the instance is down does not blame the file.
    assert whatsmeow["upload"] == {
        "type": "NotConnected",
        "message": f"acme/bare could not upload the image: {down} "
        "(failed to refresh media connections: client is nil)",
    }
    assert whatsmeow["look_up"] == {
        "type": "NotConnected",
        "message": f"acme/bare could not look the recipient up on WhatsApp: {down} (client is nil)",
    }
    assert whatsmeow["typing"] == {
        "type": "NotConnected",
        "message": f"acme/bare could not show typing: {down} (client is nil)",
    }


def test_chat_presences_and_call_offers_reach_the_sink(sent: Report) -> None:
    assert sent["presence_events"] == ["ChatPresenceChanged", "CallReceived"]
    # Neither is sent while the instance is still dialing: nothing is called on Go.
    assert sent["engine"]["presence_dialing"]["type"] == "NotConnected"
    assert sent["engine"]["reject_dialing"]["type"] == "NotConnected"


def test_receipts_reach_the_sink(sent: Report) -> None:
    # neonize's event callback, called as Go calls it, with a Receipt of a hosted instance.
    assert sent["receipts"] == [
        {
            "type": "Receipt",
            "key": "acme/dialing",
            "message_ids": ["3EB0C431C26A1916E07E", "3EB0D8D5A5E3C1C01B9A"],
            "kind": "read",
            "chat": "5511988887777@s.whatsapp.net",
            "from_jid": "5511988887777@s.whatsapp.net",
            "from_lid": "",
        }
    ]


# -- the scenarios (each in its own interpreter) ------------------------------------------------


class Events:
    """The engine's sink: records events and lets a scenario wait for some."""

    def __init__(self) -> None:
        self.items: list[EngineEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: EngineEvent) -> None:
        self.items.append(event)
        self._changed.set()

    def failed(self) -> set[str]:
        return {event.key for event in self.items if isinstance(event, ConnectFailed)}

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(EVENT_TIMEOUT):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    def dump(self) -> list[dict[str, Any]]:
        return [{"type": type(event).__name__, **dataclasses.asdict(event)} for event in self.items]


class FakeProxy:
    """A local TCP server in a proxy's place: records the first bytes of each connection,
    holds it `hold` seconds without answering, then closes it (the client reads EOF)."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.first_bytes: list[bytes] = []
        self.reached = asyncio.Event()  # a client has connected
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, scheme: str, credentials: str = "") -> str:
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.first_bytes.append(await reader.read(256))
        self.reached.set()
        await asyncio.sleep(self.hold)
        writer.close()

    def summary(self) -> Report:
        return {"port": self.port, "first_bytes": [data.hex() for data in self.first_bytes]}


def spec(workdir: Path, key: str, proxy_url: str = "") -> InstanceSpec:
    return InstanceSpec(key, workdir / "runtime" / key.replace("/", "-"), proxy_url)


async def lingering_ends(engine: Any) -> int:
    """neonize calls end a moment after their client is stopped: wait for that moment."""
    for _ in range(int(EVENT_TIMEOUT / 0.05)):
        if not engine.lingering():
            break
        await asyncio.sleep(0.05)  # the engine has no event for it: nothing waits on it
    return int(engine.lingering())


async def refusal(call: Awaitable[object]) -> str:
    try:
        await call
    except EngineError as error:
        return str(error)
    return "accepted"


async def store_scenario(workdir: Path) -> Report:
    from zapgate.sessions.neonize_engine import NeonizeEngine

    events = Events()
    engine = NeonizeEngine(events)
    async with FakeProxy() as proxy:
        instance = spec(workdir, "acme/store", proxy.url("socks5"))
        await engine.start(instance)
        await events.until(lambda: "acme/store" in events.failed())
        await engine.stop(instance.key)
        await engine.close()
    return {"store": str(instance.store_path), "events": events.dump(), "hosted": engine.hosted()}


async def dns_scenario(workdir: Path) -> Report:
    from zapgate.sessions.neonize_engine import NeonizeEngine

    events = Events()
    engine = NeonizeEngine(events)
    await engine.start(spec(workdir, "acme/dns"))
    await events.until(lambda: bool(events.failed()))
    report = {"events": events.dump(), "hosted": engine.hosted()}
    report["lingering"] = await lingering_ends(engine)
    await engine.close()
    return report


async def many_scenario(workdir: Path) -> Report:
    from zapgate.sessions.neonize_engine import NeonizeEngine

    events = Events()
    engine = NeonizeEngine(events)
    keys = [f"acme/bulk-{n}" for n in range(MANY)]
    answers: list[Report] = []

    async def ask_while_connecting() -> None:
        # A key still connecting, so that every call goes through the gate.
        while pending := [key for key in keys if key not in events.failed()]:
            connected = await asyncio.wait_for(engine.is_connected(pending[-1]), EVENT_TIMEOUT)
            answers.append({"connected": connected, "failed_so_far": len(events.failed())})

    # Each connect holds the gate for its dial: 0.1 s here, forty times over.
    async with FakeProxy(hold=0.1) as proxy:
        for key in keys:
            await engine.start(spec(workdir, key, proxy.url("socks5")))
        hosted_at_start = engine.hosted()
        asker = asyncio.create_task(ask_while_connecting())
        await events.until(lambda: len(events.failed()) == MANY)
        await asker
    report = {
        "keys": keys,
        "events": events.dump(),
        "answers": answers,
        "hosted_at_start": hosted_at_start,
        "proxy_connections": len(proxy.first_bytes),
        "hosted_after": engine.hosted(),
        "lingering_after": await lingering_ends(engine),
    }
    await engine.close()
    return report


async def proxy_scenario(workdir: Path) -> Report:
    from zapgate.sessions.neonize_engine import NeonizeEngine

    events = Events()
    engine = NeonizeEngine(events)
    async with FakeProxy() as socks, FakeProxy() as http:
        await engine.start(spec(workdir, "acme/socks", socks.url("socks5", "zap:secret@")))
        await engine.start(spec(workdir, "acme/http", http.url("http")))
        await engine.start(spec(workdir, "acme/ftp", "ftp://127.0.0.1:1"))
        await events.until(lambda: len(events.failed()) == 3)
    await engine.close()
    return {"events": events.dump(), "socks": socks.summary(), "http": http.summary()}


async def lifecycle_scenario(workdir: Path) -> Report:
    from zapgate.sessions.neonize_engine import NeonizeEngine

    events = Events()
    engine = NeonizeEngine(events)
    report: Report = {
        "bad_store_path": await refusal(engine.start(spec(workdir, "acme/what?"))),
        "pair_not_hosted": await refusal(engine.pair_phone("acme/nobody", PHONE)),
    }
    # A dial of 3 s: longer than a connect may hold the gate (1 s), so the reader call below
    # gets through while it is still going on.
    async with FakeProxy(hold=3.0) as slow, FakeProxy() as closing:
        dialing = spec(workdir, "acme/dialing", slow.url("socks5"))
        await engine.start(dialing)
        await slow.reached.wait()  # dialing now: its connect holds the gate as a writer
        queued = spec(workdir, "acme/queued", closing.url("socks5"))
        await engine.start(queued)
        await engine.stop(queued.key)  # still waiting for the gate: never reaches neonize
        report["stopped_while_queued"] = {
            "store": queued.store_path.exists(),
            "hosted": engine.hosted(),
            "connections": len(closing.first_bytes),
        }
        report["pair_bad_phone"] = await refusal(engine.pair_phone(dialing.key, "5511999"))
        report["pair_before_qr"] = await refusal(engine.pair_phone(dialing.key, PHONE))
        connected = await engine.is_connected(dialing.key)
        hosted = engine.hosted()
        await engine.start(dialing)  # already started: nothing happens
        report["connecting"] = {
            "hosted": hosted,
            "connected": connected,
            "hosted_after_restart": engine.hosted(),
        }
        # The engine's connect thread and neonize's own helper (named after the client id).
        dialing_threads = [t for t in threading.enumerate() if f"{dialing.key}#" in t.name]
        report["dialing_threads"] = {"count": len(dialing_threads)}
        report["dialing_threads"]["daemon"] = all(t.daemon for t in dialing_threads)
        await engine.stop(dialing.key)  # still dialing: its client stops when the dial ends
        report["stopped_while_dialing"] = {
            "hosted": engine.hosted(),
            "events": events.dump(),
            "lingering": await lingering_ends(engine),
        }

        failing = spec(workdir, "acme/failing", closing.url("socks5"))
        for attempt in (1, 2):
            await engine.start(failing)
            await events.until(lambda attempt=attempt: len(events.items) == attempt)
        report["restarted"] = events.dump()

        store_before = failing.store_path.exists()
        await engine.logout(failing.key)
        report["logout"] = {
            "store_before": store_before,
            "store_after": failing.store_path.exists(),
            "hosted": engine.hosted(),
        }
    report["logout_unknown"] = await refusal(engine.logout("acme/nobody"))
    await engine.close()
    report["start_after_close"] = await refusal(engine.start(failing))
    return report


SEND_KINDS = ("text", "image", "video", "audio", "voice_note", "document", "location", "contact")


def send_contents() -> dict[str, OutgoingContent]:
    from tests.test_neonize_send import VCARD, ogg_opus, png

    return {
        "text": OutgoingContent(text="Olá, Ana!"),
        "image": OutgoingContent(image=Media(png(320, 200), "image/png", caption="Catálogo")),
        "video": OutgoingContent(video=Media(b"\x00\x00\x00\x18ftypmp42", "video/mp4")),
        "audio": OutgoingContent(audio=Media(b"ID3\x04\x00" + bytes(64), "audio/mpeg")),
        "voice_note": OutgoingContent(audio=Media(ogg_opus(4.0), "audio/ogg"), voice_note=True),
        "document": OutgoingContent(
            document=Media(b"%PDF-1.7\n", "application/pdf", file_name="Proposta.pdf")
        ),
        "location": OutgoingContent(
            latitude=-23.561414, longitude=-46.655881, location_name="MASP"
        ),
        "contact": OutgoingContent(contact_name="Ana Souza", contact_vcard=VCARD),
    }


def outcome(call: Callable[[], object]) -> Report:
    try:
        call()
    except SendRefused as refused:
        return {"type": "SendRefused", "code": refused.code, "message": str(refused)}
    except EngineError as error:  # its own type: the core decides by it (sessions/errors.py)
        return {"type": type(error).__name__, "message": str(error)}
    return {"type": "accepted"}


async def async_outcome(call: Awaitable[object]) -> Report:
    try:
        await call
    except SendRefused as refused:
        return {"type": "SendRefused", "code": refused.code, "message": str(refused)}
    except EngineError as error:  # its own type: the core decides by it (sessions/errors.py)
        return {"type": type(error).__name__, "message": str(error)}
    return {"type": "accepted"}


def whatsmeow_calls(workdir: Path) -> Report:
    """The engine's reader calls on a client neonize does not have (whatsmeow answers "client
    is nil"). Run before any engine client exists: nothing else touches neonize's maps."""
    from tests.test_neonize_send import UPLOADED
    from zapgate.sessions import neonize_calls, neonize_send

    bare = neonize_calls.neonize_client.NewClient(str(workdir / "bare.db"), uuid="acme/bare#1")
    bare._stop_finalizer.detach()
    key, to = "acme/bare", neonize_send.parse_recipient("5511988887777@s.whatsapp.net")
    deliver: Report = {}
    for kind, content in send_contents().items():
        uploaded = UPLOADED if neonize_send.upload_of(content) is not None else None
        message = neonize_send.build_message(content, uploaded, now=1_790_000_000)
        deliver[kind] = outcome(lambda m=message: neonize_calls.deliver(bare, key, to, m))
    upload = neonize_send.upload_of(send_contents()["image"])
    assert upload is not None
    image, media_type = upload
    return {
        "deliver": deliver,
        "upload": outcome(lambda: neonize_calls.upload(bare, key, "image", image.data, media_type)),
        "look_up": outcome(lambda: neonize_calls.look_up(bare, key, "5511988887777")),
        "typing": outcome(lambda: neonize_calls.show_typing(bare, key, to, True)),
    }


async def send_scenario(workdir: Path) -> Report:
    import ctypes

    from tests.test_neonize_mapping import EVENT_TO_INT, RECIPIENT, pb, receipt
    from zapgate.sessions.neonize_engine import NeonizeEngine

    report: Report = {"whatsmeow": whatsmeow_calls(workdir)}
    events = Events()
    engine = NeonizeEngine(events)
    text, recipient = OutgoingContent(text="Olá"), "5511988887777@s.whatsapp.net"
    calls: Report = {
        "send_not_hosted": await async_outcome(engine.send("acme/nobody", recipient, text)),
        "typing_not_hosted": await async_outcome(engine.set_typing("acme/nobody", recipient, True)),
        "bad_recipient": await async_outcome(engine.send("acme/nobody", "+5511988887777", text)),
        "empty_text": await async_outcome(
            engine.send("acme/nobody", recipient, OutgoingContent(text=" "))
        ),
    }
    async with FakeProxy(hold=3.0) as slow:
        dialing = spec(workdir, "acme/dialing", slow.url("socks5"))
        await engine.start(dialing)
        await slow.reached.wait()
        calls["send_dialing"] = await async_outcome(engine.send(dialing.key, recipient, text))
        calls["typing_dialing"] = await async_outcome(
            engine.set_typing(dialing.key, recipient, False)
        )
        # neonize's event callback, called the way Go calls it, with a Receipt.
        data = receipt(pb.Receipt.READ, sender=RECIPIENT).SerializeToString()
        buffer = ctypes.create_string_buffer(data, len(data))
        client = engine._sessions[dialing.key].client
        code = EVENT_TO_INT[pb.Receipt]
        client.event.execute(client.uuid, ctypes.addressof(buffer), len(data), code)
        await events.until(lambda: bool(events.items))
        report["receipts"] = events.dump()
        # A chat presence and a call offer reach the sink the same way (their own handlers).
        from tests.test_neonize_presence import OFFER_NODE, REMOTE, State, source

        typing = pb.ChatPresence(MessageSource=source(), State=State.COMPOSING, Media=1)
        meta = pb.BasicCallMeta(
            callCreator=RECIPIENT, callCreatorAlt=RECIPIENT, timestamp=1, callID="C1"
        )
        getattr(meta, "from").CopyFrom(RECIPIENT)
        offer = pb.CallOffer(basicCallMeta=meta, callRemoteMeta=REMOTE, data=OFFER_NODE)
        for event in (typing, offer):
            data = event.SerializeToString()
            buffer = ctypes.create_string_buffer(data, len(data))
            code = EVENT_TO_INT[type(event)]
            client.event.execute(client.uuid, ctypes.addressof(buffer), len(data), code)
        await events.until(lambda: len(events.items) >= 3)
        report["presence_events"] = [e["type"] for e in events.dump()[1:]]
        calls["presence_dialing"] = await async_outcome(
            engine.send_presence(dialing.key, "", "available")
        )
        calls["reject_dialing"] = await async_outcome(
            engine.reject_call(dialing.key, recipient, "C1")
        )
        await engine.stop(dialing.key)
    calls["hosted_after"] = engine.hosted()
    report["engine"] = calls
    await engine.close()
    return report


SCENARIOS: dict[str, Scenario] = {
    "send": send_scenario,
    "store": store_scenario,
    "dns": dns_scenario,
    "many": many_scenario,
    "proxy": proxy_scenario,
    "lifecycle": lifecycle_scenario,
}


if __name__ == "__main__":
    run_main(SCENARIOS)
