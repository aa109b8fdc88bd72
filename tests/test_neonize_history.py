"""neonize's real HistorySync event (a waHistorySync.HistorySync built with neonize's own
protobuf classes, through the bytes-and-back trip neonize makes before a handler sees it)
mapped to HistorySynced (sessions/neonize_history.py), and on into the chat store the way
the gateway imports it."""

from __future__ import annotations

import asyncio
import ctypes
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.scenarios import Report, Scenario, play, run_main
from zapgate.gateway.events.history import HistoryImport
from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.chat_reads import ChatStore
from zapgate.gateway.store.chat_settings import ChatSettingsRepository
from zapgate.gateway.store.db import open_database
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.sessions import neonize_history, wire
from zapgate.sessions.events import HistoryChat, HistorySynced

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.events import EVENT_TO_INT, INT_TO_EVENT
    from neonize.proto import Neonize_pb2 as pb
    from neonize.proto.waCommon import WACommon_pb2 as wa_common
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa
    from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as wh
    from neonize.proto.waWeb import WAWebProtobufsWeb_pb2 as web

KEY = "acme/sales-1"
ANA = "5511970000001@s.whatsapp.net"
RUI = "5511960000301@s.whatsapp.net"
GROUP = "120363025246125777@g.us"
NOW = 1_790_000_000


def web_message(chat: str, message_id: str, at: int, content: Any, **fields: Any) -> Any:
    key = wa_common.MessageKey(
        remoteJID=chat,
        fromMe=fields.pop("from_me", False),
        ID=message_id,
        participant=fields.pop("participant", ""),
    )
    return wh.HistorySyncMsg(
        message=web.WebMessageInfo(key=key, message=content, messageTimestamp=at, **fields),
        msgOrderID=at,
    )


def history_event() -> Any:
    data = wh.HistorySync(
        syncType=wh.HistorySync.INITIAL_BOOTSTRAP,
        chunkOrder=2,
        progress=100,
        pushnames=[wh.Pushname(ID=ANA, pushname="Ana")],
        conversations=[
            wh.Conversation(
                ID=ANA,
                unreadCount=2,
                pinned=1,
                muteEndTime=(NOW + 3600) * 1000,
                messages=[
                    web_message(ANA, "3A02", NOW - 10, wa.Message(conversation="tudo ótimo")),
                    web_message(
                        ANA,
                        "3A01",
                        NOW - 20,
                        wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text="oi?")),
                        from_me=True,
                    ),
                    web_message(
                        ANA,
                        "3A00",
                        NOW - 30,
                        wa.Message(
                            imageMessage=wa.ImageMessage(
                                mimetype="image/jpeg", caption="foto", fileLength=10
                            )
                        ),
                    ),
                    # A reaction of the past: no message of the chat.
                    web_message(
                        ANA,
                        "3A03",
                        NOW - 5,
                        wa.Message(
                            reactionMessage=wa.ReactionMessage(
                                key=wa_common.MessageKey(remoteJID=ANA, ID="3A02"), text="👍"
                            )
                        ),
                    ),
                ],
            ),
            wh.Conversation(
                ID=GROUP,
                name="Família",
                archived=True,
                messages=[
                    web_message(
                        GROUP,
                        "3AG1",
                        NOW - 40,
                        wa.Message(conversation="bom dia"),
                        participant="5511960000301:7@s.whatsapp.net",
                        pushName="Rui",
                    )
                ],
            ),
        ],
    )
    built = pb.HistorySync(Data=data)
    return INT_TO_EVENT[EVENT_TO_INT[pb.HistorySync]].FromString(built.SerializeToString())


def test_a_real_history_sync_maps_to_chats_and_messages() -> None:
    synced = neonize_history.to_history_synced(KEY, history_event())
    assert (synced.sync_type, synced.chunk_order, synced.progress, synced.final) == (
        "initial_bootstrap",
        2,
        100,
        True,
    )
    assert synced.chats == (
        HistoryChat(ANA, "Ana", unread=2, pinned=True, muted_until=float(NOW + 3600)),
        HistoryChat(GROUP, "Família", archived=True),
    )
    assert [(m.message_id, m.kind, m.text, m.from_me, m.sender_jid) for m in synced.messages] == [
        ("3A02", "text", "tudo ótimo", False, ANA),
        ("3A01", "text", "oi?", True, ""),
        ("3A00", "image", "foto", False, ANA),
        ("3AG1", "text", "bom dia", False, RUI),  # the device part dropped
    ]
    assert synced.messages[0].push_name == "Ana"  # from the sync's push names
    assert synced.messages[2].media_mime_type == "image/jpeg"
    assert synced.messages[2].media_ref  # DownloadMedia's handle, as for live messages
    assert synced.messages[3].timestamp == NOW - 40
    # It crosses the worker socket intact.
    assert wire.decode(wire.encode(synced)) == synced


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    yield engine
    await engine.dispose()


async def test_the_mapped_sync_lands_in_the_chat_store_once(engine: AsyncEngine) -> None:
    synced: HistorySynced = neonize_history.to_history_synced(KEY, history_event())
    events = EventLog(engine)
    importer = HistoryImport(
        engine, events, ChatSettingsRepository(engine), clock=lambda: NOW * 1_000_000, batch_size=2
    )
    await importer.received("acme", "sales-1", synced)
    await importer.received("acme", "sales-1", synced)  # repeated: nothing twice
    store = ChatStore(engine)
    page = await store.chats_page("acme", "sales-1", after=None, limit=10)
    assert [(c.jid, c.name, c.unread, c.pinned, c.archived) for c in page] == [
        (ANA, "Ana", 2, True, False),
        (GROUP, "Família", 0, False, True),
    ]
    assert page[0].last_message_id == "3A02"
    messages = await store.messages_page("acme", "sales-1", ANA, after=(0, 0), newer=True, limit=10)
    assert [m.text for m in messages] == ["foto", "oi?", "tudo ótimo"]
    assert all(m.from_history for m in messages)
    photo = await InboundRepository(engine).media("acme", "sales-1", "3A00")
    assert photo is not None
    assert (photo.mime_type, photo.size) == ("image/jpeg", 10)
    logged = await events.read("acme", 0, [], [], 10)
    completed = [e.history_sync_completed for e in logged if e.HasField("history_sync_completed")]
    assert [(c.chats, c.messages_imported) for c in completed] == [(2, 4), (2, 0)]


# -- the engine: a history sync reaches the sink -----------------------------------------------


def test_the_neonize_engine_delivers_history_syncs(tmp_path: Path) -> None:
    report = play("tests.test_neonize_history", "deliver", tmp_path)
    # Through neonize's own event callback, as Go calls it.
    [synced] = report["events"]
    assert synced["type"] == "HistorySynced"
    assert synced["key"] == "acme/history"
    assert [m["message_id"] for m in synced["messages"]] == ["3A02", "3A01", "3A00", "3AG1"]
    assert synced["final"] is True


async def deliver_scenario(workdir: Path) -> Report:
    from tests.test_neonize_offline import Events, FakeProxy, spec
    from zapgate.sessions.neonize_engine import NeonizeEngine

    events = Events()
    engine = NeonizeEngine(events)
    async with FakeProxy(hold=3.0) as slow:
        dialing = spec(workdir, "acme/history", slow.url("socks5"))
        await engine.start(dialing)
        await slow.reached.wait()
        client = engine._sessions[dialing.key].client
        data = history_event().SerializeToString()
        buffer = ctypes.create_string_buffer(data, len(data))
        code = EVENT_TO_INT[pb.HistorySync]
        client.event.execute(client.uuid, ctypes.addressof(buffer), len(data), code)
        await events.until(lambda: len(events.items) == 1)
        await asyncio.sleep(0.2)  # nothing else arrives
        await engine.stop(dialing.key)
    report = {"events": events.dump()}
    await engine.close()
    return report


SCENARIOS: dict[str, Scenario] = {"deliver": deliver_scenario}


if __name__ == "__main__":
    run_main(SCENARIOS)
