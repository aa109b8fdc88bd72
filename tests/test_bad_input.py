"""Bad input is INVALID_ARGUMENT naming the field, never INTERNAL: out-of-range Timestamps,
forged page tokens, and fields that would otherwise reach the store unchecked. Each case here
was INTERNAL (or reached SQL) before it was fixed; tests/test_fuzz.py looks for more."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from zapgate.gateway.rpc.errors import InvalidArgument
from zapgate.gateway.rpc.paging import (
    CONTACT_KEY,
    INSTANCE_ID,
    SEQ,
    decode_page_token,
    encode_page_token,
)
from zapgate.v1 import contact_pb2 as cpb
from zapgate.v1 import contact_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as pb

PHONE = "+5511960000001"


@pytest.fixture
async def messenger(running: RunningGateway, tenant: str) -> Messenger:
    return Messenger(await SimClient.for_tenant(running, tenant))


def forged(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def queued_ids(messenger: Messenger, instance_id: str) -> list[str]:
    listed = await messenger.stub.ListMessages(
        pb.ListMessagesRequest(instance_id=instance_id), metadata=messenger.metadata
    )
    return [m.id for m in listed.messages]


BAD_TIMESTAMPS = [
    ("send_at", Timestamp(seconds=2**62)),
    ("send_at", Timestamp(seconds=253_402_300_800)),  # 10000-01-01
    ("send_at", Timestamp(seconds=-62_135_596_801)),  # before year 1
    ("send_at", Timestamp(seconds=1, nanos=-1)),
    ("expire_time", Timestamp(seconds=-(2**63))),
    ("expire_time", Timestamp(seconds=1, nanos=1_000_000_000)),
]


@pytest.mark.parametrize(("field", "value"), BAD_TIMESTAMPS)
async def test_an_out_of_range_timestamp_is_invalid_and_nothing_is_queued(
    messenger: Messenger, field: str, value: Timestamp
) -> None:
    await messenger.client.create("times")
    request = pb.SendMessageRequest(instance_id="times", phone=PHONE, text=pb.Text(body="hi"))
    getattr(request, field).CopyFrom(value)
    info, violations = await expect_error(
        messenger.stub.SendMessage(request, metadata=messenger.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info.reason == "INVALID_ARGUMENT"
    assert [f for f, _ in violations] == [field]
    assert await queued_ids(messenger, "times") == []


async def test_the_timestamp_range_ends_are_accepted(messenger: Messenger) -> None:
    await messenger.client.create("time-ends")
    request = pb.SendMessageRequest(
        instance_id="time-ends",
        phone=PHONE,
        text=pb.Text(body="hi"),
        send_at=Timestamp(seconds=253_402_300_798, nanos=999_999_999),
        expire_time=Timestamp(seconds=253_402_300_799, nanos=999_999_999),
    )
    reply = await messenger.stub.SendMessage(request, metadata=messenger.metadata)
    assert reply.message.send_at.seconds == 253_402_300_798
    assert await queued_ids(messenger, "time-ends") == [reply.message.id]


def message_tokens(filter_key: str) -> list[str]:
    return [
        forged({"after": "abc", "filter": filter_key}),  # the old format, a non-number seq
        forged({"v": 1, "after": "12", "filter": filter_key}),  # a string, not an int
        forged({"v": 1, "after": True, "filter": filter_key}),
        forged({"v": 1, "after": 2**63, "filter": filter_key}),  # beyond int64
        forged({"v": 1, "after": -5, "filter": filter_key}),
        forged({"v": 1, "after": 1.5, "filter": filter_key}),
        forged({"v": 2, "after": 5, "filter": filter_key}),
        forged({"v": 1, "after": 5, "filter": 7}),
        forged([1, 2]),
        "bm90IGpzb24",  # "not json"
        "%%%",
        "4pyTIMOgIGxhIG1vZGU",  # valid UTF-8, not JSON
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
    ]


async def test_forged_list_messages_tokens_are_invalid(messenger: Messenger) -> None:
    await messenger.client.create("tokens")
    filter_key = "tokens|state=0"
    for token in message_tokens(filter_key):
        request = pb.ListMessagesRequest(instance_id="tokens", page_token=token)
        _, violations = await expect_error(
            messenger.stub.ListMessages(request, metadata=messenger.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [f for f, _ in violations] == ["page_token"], token


async def test_forged_list_contacts_tokens_are_invalid(messenger: Messenger) -> None:
    await messenger.client.create("book")
    stub = contact_pb2_grpc.ContactServiceStub(messenger.client.channel)
    filter_key = json.dumps(["book", "", ""])
    tokens = [
        forged({"after": "not json", "filter": filter_key}),  # the old format
        forged({"after": "[1, 2, 3]", "filter": filter_key}),  # a 3-tuple reached SQL
        forged({"v": 1, "after": ["a", "b", "c"], "filter": filter_key}),
        forged({"v": 1, "after": ["a"], "filter": filter_key}),
        forged({"v": 1, "after": [1, "x@s.whatsapp.net"], "filter": filter_key}),
        forged({"v": 1, "after": ["a", ""], "filter": filter_key}),
        forged({"v": 1, "after": ["a\x00", "x"], "filter": filter_key}),
        forged({"v": 1, "after": ["a" * 801, "x"], "filter": filter_key}),
        forged({"v": 1, "after": {"a": "b"}, "filter": filter_key}),
    ]
    for token in tokens:
        request = cpb.ListContactsRequest(instance_id="book", page_token=token)
        _, violations = await expect_error(
            stub.ListContacts(request, metadata=messenger.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [f for f, _ in violations] == ["page_token"], token


async def test_forged_list_instances_tokens_are_invalid(messenger: Messenger) -> None:
    tokens = [
        forged({"v": 1, "after": {"id": "x"}, "filter": "state=0"}),
        forged({"v": 1, "after": 5, "filter": "state=0"}),
        forged({"v": 1, "after": "a\x00b", "filter": "state=0"}),  # PostgreSQL rejects NUL
        forged({"v": 1, "after": "a" * 65, "filter": "state=0"}),
    ]
    for token in tokens:
        request = ipb.ListInstancesRequest(page_token=token)
        _, violations = await expect_error(
            messenger.client.instances.ListInstances(request, metadata=messenger.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [f for f, _ in violations] == ["page_token"], token


def test_tokens_round_trip_with_their_exact_shapes() -> None:
    assert decode_page_token(encode_page_token(42, "f"), "f", SEQ) == 42
    assert decode_page_token(encode_page_token("abc", "f"), "f", INSTANCE_ID) == "abc"
    token = encode_page_token(["", "1@s.whatsapp.net"], "f")
    assert decode_page_token(token, "f", CONTACT_KEY) == ("", "1@s.whatsapp.net")
    assert decode_page_token("", "f", SEQ) is None
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(encode_page_token(42, "f"), "g", SEQ)
    assert "different filter" in caught.value.message
    with pytest.raises(InvalidArgument):
        decode_page_token(encode_page_token("42", "f"), "f", SEQ)


async def test_a_huge_message_id_is_invalid_with_details(messenger: Messenger) -> None:
    # Echoed in full by MESSAGE_NOT_FOUND, it overflowed gRPC's 16 KiB trailer limit: the
    # client saw RESOURCE_EXHAUSTED without any details.
    await messenger.client.create("ids")
    for message_id in ("x" * 70_000, "a\x00b"):
        request = pb.GetMessageRequest(instance_id="ids", message_id=message_id)
        _, violations = await expect_error(
            messenger.stub.GetMessage(request, metadata=messenger.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [f for f, _ in violations] == ["message_id"]


async def test_an_error_naming_a_huge_label_key_still_carries_its_details(
    messenger: Messenger,
) -> None:
    request = ipb.CreateInstanceRequest(
        instance_id="labels", labels={"K" * 70_000: "v", **{f"B{n}": "v" for n in range(100)}}
    )
    _, violations = await expect_error(
        messenger.client.instances.CreateInstance(request, metadata=messenger.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations[0][0].startswith("labels")
    assert all(len(field) <= 101 for field, _ in violations)


async def test_strings_postgresql_cannot_store_are_invalid(messenger: Messenger) -> None:
    await messenger.client.create("nul")
    send = pb.SendMessageRequest(
        instance_id="nul", phone=PHONE, text=pb.Text(body="hi"), idempotency_key="a\x00"
    )
    _, violations = await expect_error(
        messenger.stub.SendMessage(send, metadata=messenger.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in violations] == ["idempotency_key"]
    assert await queued_ids(messenger, "nul") == []
    stub = contact_pb2_grpc.ContactServiceStub(messenger.client.channel)
    for fields, field in [({"query": "a\x00"}, "query"), ({"phone_prefix": "+²"}, "phone_prefix")]:
        listing = cpb.ListContactsRequest(instance_id="nul", **fields)  # type: ignore[arg-type]
        _, violations = await expect_error(
            stub.ListContacts(listing, metadata=messenger.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [f for f, _ in violations] == [field]
    create = ipb.CreateInstanceRequest(
        instance_id="proxied", proxy_url="socks5://" + "h" * 500 + ":1080"
    )
    _, violations = await expect_error(
        messenger.client.instances.CreateInstance(create, metadata=messenger.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in violations] == ["proxy_url"]
