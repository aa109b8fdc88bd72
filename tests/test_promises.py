"""Promises that used to break, tried through the public API against real gateways: tenant
isolation of receipts, inbound senders as known contacts, automatic pauses that persist,
messages that stay QUEUED through their typing pause, pair codes with their real lifetime."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import grpc.aio

from tests.conftest import FAST_SIM, RunningGateway, started_gateway
from tests.messaging import FAST_POLICY, Messenger
from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from tests.test_sessions_at_rest import SERVER_FLAGS, make_key
from zapgate.ratelimit.health import LOW_DELIVERY, PauseRules
from zapgate.v1 import event_pb2
from zapgate.v1 import event_pb2_grpc as event_grpc
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

S = pb.MessageState
NO_RECEIPTS = dataclasses.replace(FAST_SIM, delivered_seconds=-1, read_seconds=-1)
ANYONE = "+5511911111111"
PENDING = (S.MESSAGE_STATE_QUEUED, S.MESSAGE_STATE_SENDING)
SENT_OR_LATER = (S.MESSAGE_STATE_SENT, S.MESSAGE_STATE_DELIVERED, S.MESSAGE_STATE_READ)


def policy(**changes: object) -> ipb.SendPolicy:
    changed = ipb.SendPolicy()
    changed.CopyFrom(FAST_POLICY)
    for name, value in changes.items():
        setattr(changed, name, value)
    return changed


async def messenger(running: RunningGateway, tenant: str) -> Messenger:
    return Messenger(await SimClient.for_tenant(running, tenant))


async def receipt(who: Messenger, instance_id: str, whatsapp_id: str, kind: int) -> None:
    request = spb.SendReceiptRequest(
        instance_id=instance_id, whatsapp_message_ids=[whatsapp_id], kind=kind, from_phone=ANYONE
    )
    await who.client.sim.SendReceipt(request, metadata=who.metadata)


async def sent(who: Messenger, instance_id: str, text: str, phone: str = ANYONE) -> pb.Message:
    message = await who.send_text(instance_id, phone, text)
    return await who.wait_message(
        instance_id, message.id, lambda m: m.state == S.MESSAGE_STATE_SENT
    )


async def events_of(running: RunningGateway, who: Messenger) -> list[event_pb2.Event]:
    """Every event of the tenant so far (the stream is cut once it has caught up)."""
    stub = event_grpc.EventServiceStub(running.channel)
    stream = stub.Subscribe(event_pb2.SubscribeRequest(from_cursor=0), metadata=who.metadata)
    last = await stub_last_cursor(running)
    found: list[event_pb2.Event] = []
    async for response in stream:
        found.append(response.event)
        if response.event.cursor >= last:
            break
    stream.cancel()
    return found


async def stub_last_cursor(running: RunningGateway) -> int:
    return await running.gateway.runtime.events.last_cursor()


async def wait_until(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout  # a guard against hangs, not a timing assertion
    while not await check():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.02)


async def test_a_receipt_never_moves_another_tenants_message(tmp_path: Path) -> None:
    async with started_gateway(tmp_path, sim_timings=NO_RECEIPTS) as running:
        alpha, beta = await messenger(running, "alpha"), await messenger(running, "beta")
        await alpha.ready("shop", "+5511900000001")
        await beta.ready("shop", "+5511900000002")
        theirs = await sent(alpha, "shop", "alpha's message")
        ours = await sent(beta, "shop", "beta's message")

        # Beta's phone acknowledges a WhatsApp id that belongs to alpha's account, then its
        # own message: once its own has moved, the other receipt was handled too.
        kind = spb.RECEIPT_KIND_READ
        await receipt(beta, "shop", theirs.whatsapp_message_id, kind)
        await receipt(beta, "shop", ours.whatsapp_message_id, kind)
        await beta.wait_message("shop", ours.id, lambda m: m.state == S.MESSAGE_STATE_READ)
        await asyncio.sleep(0.2)  # any receipt task still in flight lands meanwhile

        assert (await alpha.get("shop", theirs.id)).state == S.MESSAGE_STATE_SENT
        # Alpha's own phone still moves it.
        await receipt(alpha, "shop", theirs.whatsapp_message_id, spb.RECEIPT_KIND_DELIVERED)
        await alpha.wait_message("shop", theirs.id, lambda m: m.state == S.MESSAGE_STATE_DELIVERED)


async def test_someone_who_wrote_first_is_no_new_contact(tmp_path: Path) -> None:
    async with started_gateway(tmp_path) as running:
        sales = await messenger(running, "acme")
        await sales.ready("sales", "+5511900000003", policy(new_contacts_per_day=0))
        inbound = spb.InjectIncomingMessageRequest(
            instance_id="sales", from_phone="+5511922220000", push_name="Lead", text="oi!"
        )
        await sales.client.sim.InjectIncomingMessage(inbound, metadata=sales.metadata)

        async def arrived() -> bool:
            events = await events_of(running, sales)
            return any(e.HasField("message_received") for e in events)

        await wait_until(arrived, "the lead's message is in the log")
        # Known contacts only: the lead who wrote gets the answer, a stranger does not.
        answer = await sales.send_text("sales", "+5511922220000", "hello, lead")
        cold = await sales.send_text("sales", "+5511933330000", "hello, stranger")
        done = await sales.wait_message("sales", answer.id, lambda m: m.state in SENT_OR_LATER)
        assert done.whatsapp_message_id
        assert (await sales.get("sales", cold.id)).state == S.MESSAGE_STATE_QUEUED
        stats = await sales.client.instances.GetInstanceStats(
            ipb.GetInstanceStatsRequest(instance_id="sales"), metadata=sales.metadata
        )
        assert stats.stats.remaining_new_contacts == 0


async def test_a_falling_delivery_rate_pauses_sending_for_good(tmp_path: Path) -> None:
    rules = PauseRules(receipt_grace_seconds=1.0, delivery_window=3, min_delivery_ratio=0.5)
    async with started_gateway(tmp_path, sim_timings=NO_RECEIPTS, pause_rules=rules) as running:
        bulk = await messenger(running, "acme")
        await bulk.ready("bulk", "+5511900000004")
        last = None
        for n in range(4):  # within the grace time: nothing is judged before the receipt
            last = await bulk.send_text("bulk", f"+55119444400{n:02d}", f"offer {n}")
        assert last is not None
        sent_last = await bulk.wait_message(
            "bulk", last.id, lambda m: m.state == S.MESSAGE_STATE_SENT
        )
        await asyncio.sleep(1.2)  # every send is past its grace time now
        # One receipt of four: the delivery rate judged on its arrival is too low.
        await receipt(bulk, "bulk", sent_last.whatsapp_message_id, spb.RECEIPT_KIND_DELIVERED)

        async def paused() -> bool:
            instance = await bulk.client.get("bulk")
            return instance.sending_paused_reason.startswith(LOW_DELIVERY)

        await wait_until(paused, "sending paused for the low delivery rate")
        events = await events_of(running, bulk)
        pauses = [e.sending_paused.reason for e in events if e.HasField("sending_paused")]
        assert any(reason.startswith(LOW_DELIVERY) for reason in pauses)


async def test_a_pair_code_expires_when_the_engine_says(tmp_path: Path) -> None:
    async with started_gateway(tmp_path) as running:
        client = await SimClient.for_tenant(running, "acme")
        await client.create("shop")
        async for update in client.connect("shop", "+5511900000005"):
            if update.HasField("pair_code"):
                lifetime = update.pair_code.expire_time.ToMicroseconds() / 1e6 - time.time()
                break
        # The simulator's codes live FAST_SIM.pair_code_seconds (5 s), not whatsmeow's 160.
        assert 0 < lifetime <= FAST_SIM.pair_code_seconds


async def test_a_message_in_its_typing_pause_is_still_queued_and_survives_kill_9(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    typing = policy(typing=True, typing_chars_per_second=1, typing_max_seconds=8)
    first = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        key = await make_key(data_dir, "acme")
        async with grpc.aio.insecure_channel(first.address) as channel:
            shop = Messenger(SimClient(channel, key))
            await shop.ready("shop", "+5511900000006", typing)
            message = await shop.send_text("shop", ANYONE, "a text that takes a while to type")

            async def typing_shown() -> bool:
                return any(r.kind == "composing" for r in await shop.received("shop"))

            await wait_until(typing_shown, "the phone shows typing")
            # Nothing was handed to WhatsApp yet: the message is QUEUED, not SENDING.
            assert (await shop.get("shop", message.id)).state == S.MESSAGE_STATE_QUEUED
        first.process.kill()  # kill -9 in the middle of the typing pause
        await asyncio.to_thread(first.wait)
    finally:
        first.close()

    second = ServerProcess(data_dir, *SERVER_FLAGS)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            shop = Messenger(SimClient(channel, key))
            done = await shop.wait_message(
                "shop", message.id, lambda m: m.state not in PENDING, timeout=60
            )
            texts = [r.text for r in await shop.received("shop") if r.kind == "text"]
    finally:
        second.close()
    # Sent after the restart, exactly once: it never became DELIVERY_UNKNOWN.
    assert done.state in SENT_OR_LATER
    assert texts == ["a text that takes a while to type"]
