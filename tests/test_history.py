"""History sync over real gRPC with the simulator: the phone's preloaded history arrives
after pairing, is imported into the chat store in blobs with progress and completion events,
within the instance's chat settings, and a repeated sync stores nothing twice."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.conftest import RunningGateway
from tests.messaging import FAST_POLICY, Messenger
from tests.rpc import expect_error
from tests.test_chats import Chats
from tests.test_events import messenger, subscribed
from tests.test_inbound import SENDER, SENDER_JID, inject
from zapgate.v1 import chat_pb2 as cpb
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["messenger"]

PHONE = "+5511970000970"
FRIEND, FRIEND_JID = "+5511960000301", "5511960000301@s.whatsapp.net"
GROUP = "120363025246125777@g.us"
HISTORY_TYPES = [epb.EVENT_TYPE_HISTORY_SYNC_PROGRESS, epb.EVENT_TYPE_HISTORY_SYNC_COMPLETED]
DAY = 86_400


def at(seconds_ago: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(int((time.time() - seconds_ago) * 1e6))
    return stamp


def entry(text: str, seconds_ago: float, **fields: object) -> spb.HistoryEntry:
    return spb.HistoryEntry(text=text, sent_time=at(seconds_ago), **fields)  # type: ignore[arg-type]


def history() -> list[spb.HistoryConversation]:
    return [
        spb.HistoryConversation(
            phone=SENDER,
            name="Ana Souza",
            unread_count=1,
            pinned=True,
            messages=[
                entry("bem antigo", 400 * DAY, message_id="3AOLD0001"),
                entry("oi!", 3600, message_id="3AHIST0001"),
                entry("oi, tudo?", 3000, from_me=True, message_id="3AHIST0002"),
                entry("tudo ótimo", 2000, message_id="3AHIST0003"),
            ],
        ),
        spb.HistoryConversation(
            group_jid=GROUP,
            name="Família",
            archived=True,
            muted_until=at(-DAY),
            messages=[
                entry("bom dia", 5000, sender_phone=FRIEND, push_name="Rui", message_id="3AG1"),
                entry("bom dia!", 4000, from_me=True, message_id="3AG2"),
            ],
        ),
    ]


async def preload(
    messenger: Messenger,
    instance_id: str,
    conversations: list[spb.HistoryConversation],
    **fields: object,
) -> int:
    request = spb.PreloadHistoryRequest(
        instance_id=instance_id, conversations=conversations, **fields
    )  # type: ignore[arg-type]
    return (await messenger.client.sim.PreloadHistory(request, metadata=messenger.metadata)).blobs


async def until_completed(stream: AsyncIterator[epb.SubscribeResponse]) -> list[epb.Event]:
    events = []
    async for response in stream:
        events.append(response.event)
        if response.event.HasField("history_sync_completed"):
            break
    stream.cancel()  # type: ignore[attr-defined]
    return events


async def paired_with_history(
    messenger: Messenger,
    instance_id: str,
    conversations: list[spb.HistoryConversation],
    **fields: object,
) -> list[epb.Event]:
    """Connect, preload the phone's history while the QR code shows, scan: the history sync
    arrives after pairing. Returns its events."""
    client = messenger.client
    await client.create(instance_id)
    await messenger.set_policy(instance_id, FAST_POLICY)
    stream = await subscribed(
        messenger, only_new=True, instance_ids=[instance_id], types=HISTORY_TYPES
    )
    async for update in client.connect(instance_id):
        if update.HasField("qr_code"):
            await preload(messenger, instance_id, conversations, **fields)
            await client.scan(instance_id, update.qr_code.code, PHONE)
        if update.HasField("result"):
            break
    return await until_completed(stream)


async def test_history_arrives_after_pairing_and_is_imported_once(messenger: Messenger) -> None:
    chats = Chats(messenger)
    events = await paired_with_history(messenger, "hist", history())
    [progress, completed] = events
    assert progress.history_sync_progress.progress_percent == 100
    # The 400-day-old message is past the default 90 days.
    assert completed.history_sync_completed == epb.HistorySyncCompleted(
        chats=2, messages_imported=5, messages_skipped=1
    )
    listed = (await chats.list("hist")).chats
    assert [c.jid for c in listed] == [SENDER_JID, GROUP]  # newest activity first
    direct, group = listed
    assert (direct.name, direct.unread_count, direct.pinned, direct.archived) == (
        "Ana Souza",
        1,
        True,
        False,
    )
    assert direct.last_message_preview == "tudo ótimo"
    assert (group.name, group.archived, group.HasField("muted_until")) == ("Família", True, True)
    messages = (
        await chats.messages("hist", SENDER_JID, direction=cpb.PAGE_DIRECTION_NEWER)
    ).messages
    assert [(m.text, m.from_me, m.from_history) for m in messages] == [
        ("oi!", False, True),
        ("oi, tudo?", True, True),
        ("tudo ótimo", False, True),
    ]
    [rui, mine] = (await chats.messages("hist", GROUP, direction=cpb.PAGE_DIRECTION_NEWER)).messages
    assert (rui.sender_jid, rui.push_name) == (FRIEND_JID, "Rui")
    assert mine.from_me

    # Live messages join the imported history; a repeated sync stores nothing twice and
    # leaves them alone.
    await inject(messenger, "hist", text="e aí?")
    stream = await subscribed(messenger, only_new=True, instance_ids=["hist"], types=HISTORY_TYPES)
    await preload(messenger, "hist", history())  # connected: delivered at once
    [_, again] = await until_completed(stream)
    assert again.history_sync_completed.messages_imported == 0
    texts = await chats.texts("hist", SENDER_JID)
    assert texts == ["e aí?", "tudo ótimo", "oi, tudo?", "oi!"]
    assert (await chats.search("hist", "otimo")) == ["tudo ótimo"]


async def test_the_chat_settings_bound_the_import_and_blobs_report_progress(
    messenger: Messenger,
) -> None:
    chats = Chats(messenger)
    await messenger.client.create("bounded")
    settings = cpb.ChatSettings(history_days=1, history_messages_per_chat=2)
    reply = await chats.stub.UpdateChatSettings(
        cpb.UpdateChatSettingsRequest(instance_id="bounded", settings=settings),
        metadata=chats.metadata,
    )
    assert reply.settings == settings
    long_chat = spb.HistoryConversation(
        phone=FRIEND,
        messages=[entry(f"m{n}", 3 * DAY - n * 3600) for n in range(80)],  # 3 days to now
    )
    events = await paired_with_history(messenger, "bounded", [long_chat], messages_per_blob=30)
    progress = [e.history_sync_progress for e in events if e.HasField("history_sync_progress")]
    assert [p.chunk_order for p in progress] == [0, 1, 2]
    assert [p.progress_percent for p in progress] == [33, 66, 100]
    assert events[-1].history_sync_completed.messages_imported == 2
    # The newest two (the first blob's): later blobs, older, find the chat's cap reached.
    assert await chats.texts("bounded", FRIEND_JID) == ["m79", "m78"]


async def test_chat_settings_are_checked_and_scoped(messenger: Messenger) -> None:
    chats = Chats(messenger)
    await messenger.client.create("settings")
    get = cpb.GetChatSettingsRequest(instance_id="settings")
    defaults = (await chats.stub.GetChatSettings(get, metadata=chats.metadata)).settings
    assert defaults == cpb.ChatSettings(history_days=90, history_messages_per_chat=1000)
    bad = cpb.UpdateChatSettingsRequest(
        instance_id="settings", settings=cpb.ChatSettings(history_days=-1, retention_days=-2)
    )
    _, violations = await expect_error(
        chats.stub.UpdateChatSettings(bad, metadata=chats.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [v[0] for v in violations] == ["settings.history_days", "settings.retention_days"]
    missing = cpb.GetChatSettingsRequest(instance_id="nope")
    await expect_error(
        chats.stub.GetChatSettings(missing, metadata=chats.metadata), grpc.StatusCode.NOT_FOUND
    )


async def test_preload_history_checks_its_input(messenger: Messenger) -> None:
    await messenger.ready("bad-history", PHONE)
    bad = [
        spb.HistoryConversation(),
        spb.HistoryConversation(group_jid="nope"),
        spb.HistoryConversation(phone="123"),
    ]
    _, violations = await expect_error(
        preload(messenger, "bad-history", bad), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [v[0] for v in violations] == [
        "conversations[0].chat",
        "conversations[1].group_jid",
        "conversations[2].phone",
    ]
    _ = SENDER  # the direct chat's phone in history()


async def test_retention_deletes_old_messages_and_emptied_chats(
    running: RunningGateway, messenger: Messenger
) -> None:
    chats = Chats(messenger)
    await messenger.client.create("kept")
    unbounded = cpb.UpdateChatSettingsRequest(
        instance_id="kept", settings=cpb.ChatSettings(retention_days=30)
    )
    await chats.stub.UpdateChatSettings(unbounded, metadata=chats.metadata)
    old_chat = spb.HistoryConversation(phone=FRIEND, messages=[entry("velho", 40 * DAY)])
    mixed = spb.HistoryConversation(
        phone=SENDER, messages=[entry("antigo", 35 * DAY), entry("recente", 2 * DAY)]
    )
    await paired_with_history(messenger, "kept", [old_chat, mixed])
    assert len((await chats.list("kept")).chats) == 2
    # The background loop runs this every hour; one round here.
    assert await running.gateway.runtime.chat_retention.enforce() >= 2
    [left] = (await chats.list("kept")).chats
    assert left.jid == SENDER_JID
    assert await chats.texts("kept", SENDER_JID) == ["recente"]
    await expect_error(chats.get("kept", FRIEND_JID), grpc.StatusCode.NOT_FOUND)


async def test_a_chat_exports_as_json_lines_oldest_first(messenger: Messenger) -> None:
    chats = Chats(messenger)
    await messenger.ready("export", PHONE)
    ids = [await inject(messenger, "export", text=f"linha {n} ✓") for n in range(3)]
    request = cpb.ExportChatRequest(instance_id="export", chat_jid=SENDER_JID)
    pieces = [r.data async for r in chats.stub.ExportChat(request, metadata=chats.metadata)]
    lines = b"".join(pieces).decode().splitlines()
    exported = [json.loads(line) for line in lines]
    assert [m["messageId"] for m in exported] == ids
    assert [m["text"] for m in exported] == ["linha 0 ✓", "linha 1 ✓", "linha 2 ✓"]
    assert exported[0]["chatJid"] == SENDER_JID
    missing = cpb.ExportChatRequest(instance_id="export", chat_jid=FRIEND_JID)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [r async for r in chats.stub.ExportChat(missing, metadata=chats.metadata)]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
