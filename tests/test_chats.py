"""ChatService over real gRPC with the simulator: both directions of a chat in order, unread
counts, receipts, edits, deletions and reactions, paging both ways, search, bad input and
tenant isolation."""

from __future__ import annotations

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import timestamp_pb2

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_conversation import edit, react, sent
from tests.test_events import messenger
from tests.test_inbound import SENDER, SENDER_JID, inject
from zapgate.gateway.store import schema
from zapgate.gateway.store.db import open_database
from zapgate.v1 import chat_pb2 as pb
from zapgate.v1 import chat_pb2_grpc
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

__all__ = ["messenger"]

PHONE = "+5511970000950"
OTHER = "+5511960000888"
OTHER_JID = "5511960000888@s.whatsapp.net"
GROUP = "120363025246125999@g.us"
OLDER, NEWER = pb.PAGE_DIRECTION_OLDER, pb.PAGE_DIRECTION_NEWER


class Chats:
    """ChatService calls as one tenant."""

    def __init__(self, messenger: Messenger) -> None:
        self.stub = chat_pb2_grpc.ChatServiceStub(messenger.client.channel)
        self.metadata = messenger.metadata

    async def list(self, instance_id: str, **fields: object) -> pb.ListChatsResponse:
        request = pb.ListChatsRequest(instance_id=instance_id, **fields)  # type: ignore[arg-type]
        return await self.stub.ListChats(request, metadata=self.metadata)

    async def get(self, instance_id: str, chat_jid: str) -> pb.Chat:
        request = pb.GetChatRequest(instance_id=instance_id, chat_jid=chat_jid)
        return (await self.stub.GetChat(request, metadata=self.metadata)).chat

    async def messages(
        self, instance_id: str, chat_jid: str, **fields: object
    ) -> pb.ListChatMessagesResponse:
        request = pb.ListChatMessagesRequest(instance_id=instance_id, chat_jid=chat_jid, **fields)  # type: ignore[arg-type]
        return await self.stub.ListChatMessages(request, metadata=self.metadata)

    async def texts(self, instance_id: str, chat_jid: str, **fields: object) -> list[str]:
        return [m.text for m in (await self.messages(instance_id, chat_jid, **fields)).messages]

    async def message(self, instance_id: str, message_id: str) -> pb.ChatMessage:
        request = pb.GetChatMessageRequest(instance_id=instance_id, message_id=message_id)
        return (await self.stub.GetChatMessage(request, metadata=self.metadata)).message

    async def search(self, instance_id: str, query: str, **fields: object) -> list[str]:
        request = pb.SearchMessagesRequest(instance_id=instance_id, query=query, **fields)  # type: ignore[arg-type]
        reply = await self.stub.SearchMessages(request, metadata=self.metadata)
        return [m.text for m in reply.messages]

    async def mark_read(self, instance_id: str, chat_jid: str) -> int:
        request = pb.MarkChatReadRequest(instance_id=instance_id, chat_jid=chat_jid)
        return (await self.stub.MarkChatRead(request, metadata=self.metadata)).marked


@pytest.fixture
def chats(messenger: Messenger) -> Chats:
    return Chats(messenger)


async def receipt(messenger: Messenger, instance_id: str, whatsapp_id: str, kind: int) -> None:
    request = spb.SendReceiptRequest(
        instance_id=instance_id, whatsapp_message_ids=[whatsapp_id], kind=kind, from_phone=SENDER
    )  # type: ignore[arg-type]
    await messenger.client.sim.SendReceipt(request, metadata=messenger.metadata)


async def test_both_directions_in_order_with_unread_counts_and_receipts(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("both", PHONE)
    first = await inject(messenger, "both", text="oi, tudo bem?", push_name="Ana")
    mine = await sent(messenger, "both", await messenger.send_text("both", SENDER, "tudo, e você?"))
    await inject(messenger, "both", text="também!", push_name="Ana")

    [chat] = (await chats.list("both")).chats
    assert (chat.jid, chat.name, chat.unread_count) == (SENDER_JID, "Ana", 2)
    assert chat.last_message_preview == "também!"
    assert not chat.last_message_from_me
    assert await chats.texts("both", SENDER_JID) == ["também!", "tudo, e você?", "oi, tudo bem?"]
    assert await chats.texts("both", SENDER_JID, direction=NEWER) == [
        "oi, tudo bem?",
        "tudo, e você?",
        "também!",
    ]
    own = await chats.message("both", mine.whatsapp_message_id)
    assert own.from_me
    assert own.outbox_message_id == mine.id
    assert own.state == mpb.MESSAGE_STATE_SENT

    # The phone's read receipt moves the stored state with the outbox's.
    await receipt(messenger, "both", mine.whatsapp_message_id, spb.RECEIPT_KIND_READ)
    await messenger.wait_message("both", mine.id, lambda m: m.state == mpb.MESSAGE_STATE_READ)
    assert (await chats.message("both", mine.whatsapp_message_id)).state == mpb.MESSAGE_STATE_READ

    # MarkChatRead sends the receipts (through MarkRead's path) and zeroes the count.
    assert await chats.mark_read("both", SENDER_JID) == 2
    assert (await chats.get("both", SENDER_JID)).unread_count == 0
    assert (await chats.message("both", first)).HasField("read_time")
    await inject(messenger, "both", text="?")
    assert (await chats.get("both", SENDER_JID)).unread_count == 1
    assert await chats.mark_read("both", SENDER_JID) == 1
    assert (await chats.get("both", SENDER_JID)).unread_count == 0


async def test_mark_read_of_some_messages_lowers_the_count(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("some-read", PHONE)
    ids = [await inject(messenger, "some-read", text=f"m{n}") for n in range(3)]
    assert (await chats.get("some-read", SENDER_JID)).unread_count == 3
    request = mpb.MarkReadRequest(instance_id="some-read", message_ids=ids[:2])
    await messenger.stub.MarkRead(request, metadata=messenger.metadata)
    assert (await chats.get("some-read", SENDER_JID)).unread_count == 1


async def test_edits_deletions_and_reactions_are_reflected(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("acts", PHONE)
    theirs = await inject(messenger, "acts", text="helo", message_id="3EB0CHATACT01")
    await inject(messenger, "acts", edited=epb.MessageEdited(message_id=theirs, text="hello"))
    await inject(messenger, "acts", reaction=epb.Reaction(message_id=theirs, emoji="👍"))
    await sent(messenger, "acts", await react(messenger, "acts", theirs, "❤️"))
    stored = await chats.message("acts", theirs)
    assert stored.text == "hello"
    assert [e.previous_text for e in stored.edits] == ["helo"]
    assert {(r.sender_jid, r.from_me, r.emoji) for r in stored.reactions} == {
        (SENDER_JID, False, "👍"),
        ("", True, "❤️"),
    }
    assert (await chats.search("acts", "HELLO")) == ["hello"]  # the edited text is searched

    await inject(messenger, "acts", reaction=epb.Reaction(message_id=theirs))  # removed
    await inject(messenger, "acts", revoked=epb.MessageRevoked(message_id=theirs))
    stored = await chats.message("acts", theirs)
    assert stored.HasField("revoke_time")
    assert [(r.from_me, r.emoji) for r in stored.reactions] == [(True, "❤️")]
    assert (await chats.get("acts", SENDER_JID)).last_message_preview == "[deleted]"

    mine = await sent(messenger, "acts", await messenger.send_text("acts", SENDER, "see you"))
    await sent(messenger, "acts", await edit(messenger, "acts", mine.id, "see you soon"))
    own = await chats.message("acts", mine.whatsapp_message_id)
    assert own.text == "see you soon"
    assert [e.previous_text for e in own.edits] == ["see you"]
    # Reactions and edits are no messages of their own in the chat.
    assert len((await chats.messages("acts", SENDER_JID)).messages) == 2


async def test_paging_both_ways_from_a_message_or_a_time(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("pages", PHONE)
    ids = [await inject(messenger, "pages", text=f"n{n}") for n in range(7)]
    seen, token = [], ""
    while True:
        page = await chats.messages("pages", SENDER_JID, page_size=3, page_token=token)
        seen.append([m.text for m in page.messages])
        token = page.next_page_token
        if not token:
            break
    assert seen == [["n6", "n5", "n4"], ["n3", "n2", "n1"], ["n0"]]
    newer = await chats.messages(
        "pages", SENDER_JID, direction=NEWER, start_message_id=ids[2], page_size=2
    )
    assert [m.text for m in newer.messages] == ["n3", "n4"]
    rest = await chats.messages(
        "pages",
        SENDER_JID,
        direction=NEWER,
        start_message_id=ids[2],
        page_size=2,
        page_token=newer.next_page_token,
    )
    assert [m.text for m in rest.messages] == ["n5", "n6"]
    older = await chats.texts("pages", SENDER_JID, start_message_id=ids[2])
    assert older == ["n1", "n0"]
    # From a time, inclusive both ways (WhatsApp's times are whole seconds: the messages
    # of n3's second are all in).
    oldest_first = ["n0", "n1", "n2", "n3", "n4", "n5", "n6"]
    at = (await chats.message("pages", ids[3])).sent_time
    from_time = await chats.texts("pages", SENDER_JID, direction=NEWER, start_time=at)
    assert "n3" in from_time
    assert from_time == oldest_first[-len(from_time) :]
    up_to = await chats.texts("pages", SENDER_JID, start_time=at)
    assert "n3" in up_to
    assert up_to == oldest_first[::-1][-len(up_to) :]
    later = timestamp_pb2.Timestamp(seconds=at.seconds + 3600)
    assert await chats.texts("pages", SENDER_JID, direction=NEWER, start_time=later) == []
    assert await chats.texts("pages", SENDER_JID, start_time=later) == oldest_first[::-1]
    # Chats page too, newest activity first.
    for n, phone in enumerate(("+5511960000101", "+5511960000102", "+5511960000103")):
        await inject(messenger, "pages", text=f"from {n}", from_phone=phone)
    first = await chats.list("pages", page_size=2)
    second = await chats.list("pages", page_size=2, page_token=first.next_page_token)
    assert [c.last_message_preview for c in [*first.chats, *second.chats]] == [
        "from 2",
        "from 1",
        "from 0",
        "n6",
    ]
    assert second.next_page_token == ""


async def test_search_ignores_case_and_accents_optionally_per_chat(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("search", PHONE)
    await inject(messenger, "search", text="Olá, JOÃO! 100% certo")
    await inject(messenger, "search", text="o joão chegou", from_phone=OTHER)
    await inject(messenger, "search", text="nada a ver")
    assert await chats.search("search", "joao") == ["o joão chegou", "Olá, JOÃO! 100% certo"]
    assert await chats.search("search", "joão", chat_jid=SENDER_JID) == ["Olá, JOÃO! 100% certo"]
    assert await chats.search("search", "100%") == ["Olá, JOÃO! 100% certo"]
    assert await chats.search("search", "0_") == []  # LIKE's wildcards are literal
    request = pb.SearchMessagesRequest(instance_id="search", query="A", page_size=1)
    first = await chats.stub.SearchMessages(request, metadata=chats.metadata)
    request.page_token = first.next_page_token
    second = await chats.stub.SearchMessages(request, metadata=chats.metadata)
    assert [m.text for m in [*first.messages, *second.messages]] == [
        "nada a ver",
        "o joão chegou",
    ]


async def test_group_chats_are_not_named_after_a_member(messenger: Messenger, chats: Chats) -> None:
    await messenger.ready("group-chat", PHONE)
    await inject(messenger, "group-chat", text="bom dia", group_jid=GROUP, push_name="Ana")
    chat = await chats.get("group-chat", GROUP)
    assert (chat.name, chat.unread_count) == ("", 1)
    [stored] = (await chats.messages("group-chat", GROUP)).messages
    assert (stored.sender_jid, stored.push_name) == (SENDER_JID, "Ana")


async def test_bad_ids_and_page_tokens_are_invalid_arguments(
    messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("bad", PHONE)
    await inject(messenger, "bad", text="one")
    await inject(messenger, "bad", text="two", from_phone=OTHER)
    bad = grpc.StatusCode.INVALID_ARGUMENT
    for token in ("garbage", "eyJ2IjogMSwgImFmdGVyIjogWy0xLCAwXSwgImZpbHRlciI6ICJiYWQifQ"):
        _, violations = await expect_error(chats.list("bad", page_token=token), bad)
        assert violations[0][0] == "page_token"
        _, violations = await expect_error(chats.messages("bad", SENDER_JID, page_token=token), bad)
        assert violations[0][0] == "page_token"
    # A token of another chat's listing (or direction) is refused, not a wrong page.
    await inject(messenger, "bad", text="three")
    token = (await chats.messages("bad", SENDER_JID, page_size=1)).next_page_token
    _, violations = await expect_error(chats.messages("bad", OTHER_JID, page_token=token), bad)
    assert violations == [("page_token", "issued for a different filter; start over")]
    await expect_error(chats.messages("bad", SENDER_JID, page_token=token, direction=NEWER), bad)
    for jid in ("", "nobody", "5511@c.us", "5511970000001@s.whatsapp.net\x00"):
        _, violations = await expect_error(chats.get("bad", jid), bad)
        assert violations[0][0] == "chat_jid"
    await expect_error(chats.messages("bad", SENDER_JID, direction=7), bad)
    far = timestamp_pb2.Timestamp(seconds=10**12)
    await expect_error(chats.messages("bad", SENDER_JID, start_time=far), bad)
    await expect_error(chats.search("bad", ""), bad)
    await expect_error(chats.message("bad", ""), bad)
    info, _ = await expect_error(
        chats.get("bad", "5511999999999@s.whatsapp.net"), grpc.StatusCode.NOT_FOUND
    )
    assert info.reason == "CHAT_NOT_FOUND"
    info, _ = await expect_error(chats.message("bad", "3EB0NOPE"), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "MESSAGE_NOT_FOUND"
    info, _ = await expect_error(
        chats.messages(
            "bad", OTHER_JID, start_message_id=(await chats.list("bad")).chats[0].last_message_id
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info.reason == "MESSAGE_NOT_FOUND"  # a message of another chat


async def test_another_tenant_sees_none_of_the_chats(
    running: RunningGateway, messenger: Messenger, chats: Chats
) -> None:
    await messenger.ready("mine", PHONE)
    secret = await inject(messenger, "mine", text="segredo")
    intruder = Messenger(await SimClient.for_tenant(running, "t-intruder-chats"))
    await intruder.ready("mine", "+5511970000951")  # the same instance id, another tenant
    theirs = Chats(intruder)
    assert list((await theirs.list("mine")).chats) == []
    await expect_error(theirs.get("mine", SENDER_JID), grpc.StatusCode.NOT_FOUND)
    await expect_error(theirs.message("mine", secret), grpc.StatusCode.NOT_FOUND)
    assert await theirs.search("mine", "segredo") == []
    await expect_error(theirs.mark_read("mine", SENDER_JID), grpc.StatusCode.NOT_FOUND)
    assert (await chats.get("mine", SENDER_JID)).unread_count == 1


async def test_deleting_an_instance_deletes_its_chats(
    running: RunningGateway, messenger: Messenger, chats: Chats, tenant: str
) -> None:
    await messenger.ready("gone", PHONE)
    await inject(messenger, "gone", text="bye")
    await sent(messenger, "gone", await messenger.send_text("gone", SENDER, "bye!"))
    database = await open_database(running.database_url)
    try:
        counts = await _rows(database, tenant, "gone")
        assert counts == (1, 2)
        request = ipb.DeleteInstanceRequest(instance_id="gone")
        await messenger.client.instances.DeleteInstance(request, metadata=messenger.metadata)
        assert await _rows(database, tenant, "gone") == (0, 0)
    finally:
        await database.dispose()


async def _rows(
    database: sa.ext.asyncio.AsyncEngine, tenant: str, instance_id: str
) -> tuple[int, int]:
    async with database.connect() as conn:
        counted = []
        for table in (schema.chats, schema.chat_messages):
            query = sa.select(sa.func.count()).where(
                table.c.tenant == tenant, table.c.instance_id == instance_id
            )
            counted.append(int(await conn.scalar(query) or 0))
    return counted[0], counted[1]
