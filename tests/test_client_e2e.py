"""The Python client against a real `zapgate serve --engine sim` process: pair, send, follow
the receipts, and keep one subscription going across a gateway restart.

(The shorter scenario in clients/python/tests/e2e.py runs in CI with the client installed on
its own.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from google.protobuf import field_mask_pb2

from tests.messaging import FAST_POLICY
from tests.server_process import ServerProcess
from zapgate_client import Client, Retry
from zapgate_client.v1 import chat_pb2, event_pb2, group_pb2, instance_pb2, message_pb2

FLAGS = ("--engine", "sim", "--engine-workers", "1", "--grace", "1")
RECEIPT_FLAGS = ("--sim-delivered-seconds", "0.2", "--sim-read-seconds", "0.4")
RECIPIENT = "+5511988887777"
Events = AsyncGenerator[event_pb2.Event, None]


async def until(events: Events, seen: list[int], match: Callable[[event_pb2.Event], bool]) -> None:
    """Reads `events` (noting every cursor) up to the first one that matches."""
    async for event in events:
        seen.append(event.cursor)
        if match(event):
            return
    raise AssertionError("the subscription ended")


def read(message_id: str) -> Callable[[event_pb2.Event], bool]:
    def match(event: event_pb2.Event) -> bool:
        change = event.message_state_changed
        return change.message_id == message_id and change.state == message_pb2.MESSAGE_STATE_READ

    return match


def connected(event: event_pb2.Event) -> bool:
    return event.state_changed.state == instance_pb2.INSTANCE_STATE_CONNECTED


async def create_fast(client: Client, instance_id: str) -> None:
    """A new instance with FAST_POLICY: the default would hold a message 30 s or more."""
    await client.instances.CreateInstance(
        instance_pb2.CreateInstanceRequest(instance_id=instance_id)
    )
    await client.instances.UpdateInstance(
        instance_pb2.UpdateInstanceRequest(
            instance=instance_pb2.Instance(id=instance_id, send_policy=FAST_POLICY),
            update_mask=field_mask_pb2.FieldMask(paths=["send_policy"]),
        )
    )


@asynccontextmanager
async def paired_client(tmp_path: Path, instance_id: str, phone: str) -> AsyncIterator[Client]:
    """A client of a fresh `zapgate serve --engine sim`, with `instance_id` paired as `phone`."""
    data = tmp_path / "data"
    server = ServerProcess(data, *FLAGS, *RECEIPT_FLAGS)
    key = (data / "initial-api-key").read_text().strip()
    try:
        async with asyncio.timeout(90), Client(server.address, key) as client:
            await create_fast(client, instance_id)
            await client.pair_simulated(instance_id, phone)
            yield client
    finally:
        server.close()


async def test_one_subscription_follows_pairing_sends_and_a_gateway_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, *FLAGS, *RECEIPT_FLAGS)
    port = server.port
    key = (data / "initial-api-key").read_text().strip()
    retry = Retry(initial_backoff_seconds=0.05, max_backoff_seconds=0.5)
    try:
        async with asyncio.timeout(90), Client(server.address, key, retry=retry) as client:
            await create_fast(client, "sales")
            result = await client.pair_simulated("sales", "+5511999990001")
            assert result.outcome == instance_pb2.CONNECT_OUTCOME_CONNECTED
            assert result.instance.phone == "+5511999990001"

            seen: list[int] = []
            events = client.subscribe(instance_ids=["sales"])
            first = await client.send_text("sales", RECIPIENT, "before the restart")
            await until(events, seen, read(first.id))

            server.terminate()  # the stream ends; the subscription waits and resumes
            assert await asyncio.to_thread(server.wait) == 0
            server.close()
            server = await asyncio.to_thread(
                ServerProcess, data, "--listen", f"127.0.0.1:{port}", *FLAGS, *RECEIPT_FLAGS
            )
            await until(events, seen, connected)  # the session restored, on the same stream
            second = await client.send_text("sales", RECIPIENT, "after the restart")
            await until(events, seen, read(second.id))
            await events.aclose()

            replayed: list[int] = []
            replay = client.subscribe(instance_ids=["sales"])
            await until(replay, replayed, lambda event: event.cursor == seen[-1])
            await replay.aclose()
            assert seen == replayed  # nothing lost or repeated across the restart
    finally:
        server.close()


async def test_a_group_flow_through_the_client(tmp_path: Path) -> None:
    """Create a group, read it, send to it (the message reaches the group once) and see the
    rename as a group_changed event."""
    async with paired_client(tmp_path, "team", "+5511999990004") as client:
        created = await client.groups.CreateGroup(
            group_pb2.CreateGroupRequest(
                instance_id="team", name="Suporte", participants=[RECIPIENT]
            )
        )
        assert [(r.phone, r.status) for r in created.results] == [(RECIPIENT, "ok")]
        group_jid = created.group.jid
        got = await client.groups.GetGroup(
            group_pb2.GetGroupRequest(instance_id="team", group_jid=group_jid)
        )
        roles = {p.phone: p.role for p in got.group.participants}
        assert roles == {
            RECIPIENT: group_pb2.PARTICIPANT_ROLE_MEMBER,
            "+5511999990004": group_pb2.PARTICIPANT_ROLE_SUPER_ADMIN,
        }
        seen: list[int] = []
        events = client.subscribe(instance_ids=["team"])
        sent = await client.send_text("team", group_jid, "Bem-vindos!")
        assert sent.recipient_jid == group_jid
        await until(events, seen, read(sent.id))
        await client.groups.SetGroupName(
            group_pb2.SetGroupNameRequest(
                instance_id="team", group_jid=group_jid, name="Suporte VIP"
            )
        )

        def renamed(event: event_pb2.Event) -> bool:
            return event.group_changed.name == "Suporte VIP"

        await until(events, seen, renamed)
        await events.aclose()


async def test_a_chat_through_the_client(tmp_path: Path) -> None:
    """Send to a contact, see the chat listed with the message in it, read its receipts in
    the chat store, and find it by search."""
    async with paired_client(tmp_path, "desk", "+5511999990005") as client:
        seen: list[int] = []
        events = client.subscribe(instance_ids=["desk"])
        sent = await client.send_text("desk", RECIPIENT, "Olá, seu pedido saiu")
        await until(events, seen, read(sent.id))
        await events.aclose()
        listed = await client.chats.ListChats(chat_pb2.ListChatsRequest(instance_id="desk"))
        [chat] = listed.chats
        assert chat.jid == f"{RECIPIENT[1:]}@s.whatsapp.net"
        assert chat.last_message_from_me
        page = await client.chats.ListChatMessages(
            chat_pb2.ListChatMessagesRequest(instance_id="desk", chat_jid=chat.jid)
        )
        [stored] = page.messages
        assert stored.outbox_message_id == sent.id
        assert stored.state == message_pb2.MESSAGE_STATE_READ
        found = await client.chats.SearchMessages(
            chat_pb2.SearchMessagesRequest(instance_id="desk", query="ola, SEU")
        )
        assert [m.text for m in found.messages] == ["Olá, seu pedido saiu"]
