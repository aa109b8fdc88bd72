"""Sending through the scheduler, over real gRPC, with the simulator in a worker process."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from zapgate.v1 import message_pb2 as pb

S = pb.MessageState
PHONE = "+5511970000001"


@pytest.fixture
async def messenger(running: RunningGateway, tenant: str) -> Messenger:
    return Messenger(await SimClient.for_tenant(running, tenant))


async def test_a_text_is_queued_sent_delivered_and_read(messenger: Messenger) -> None:
    await messenger.ready("m1", PHONE)
    queued = await messenger.send_text("m1", "+5511960000001", "{Hi|Hello} {name}!",
                                       variables={"name": "Ana"})
    assert queued.state == S.MESSAGE_STATE_QUEUED
    read = await messenger.wait_message("m1", queued.id, lambda m: m.state == S.MESSAGE_STATE_READ)
    assert read.whatsapp_message_id
    [received] = await messenger.received("m1")
    assert received.text in {"Hi Ana!", "Hello Ana!"}
    assert received.recipient_jid == "5511960000001@s.whatsapp.net"
    assert received.whatsapp_message_id == read.whatsapp_message_id
