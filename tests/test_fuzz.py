"""Every public RPC, fuzzed with requests generated from its input message's descriptor,
against one real gateway (simulator engine) with a real API key. Each call ends OK or with a
documented code carrying a google.rpc ErrorInfo; never INTERNAL or UNKNOWN. A failed
SendMessage queues nothing. Derandomized: CI runs the same examples every time."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningGateway, auth
from tests.test_auth import ALL_METHODS
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb

FUZZ_ID = "fuzz"  # the instance most fuzzed requests name, so they get past NOT_FOUND
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
}
# A stream we cut short ends like this on the client's side (no ErrorInfo: no server said it).
CUT_SHORT = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
UNARY_TIMEOUT = 30.0  # only guards hangs
STREAM_TIMEOUT = 5.0
MAX_DEPTH = 3
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Edges: of the int types, of Timestamp's range (years 1 and 9999), page sizes, priorities.
INT_EDGES = [0, 1, -1, 2, 50, 1000, 1001, -1000, 999_999_999, 1_000_000_000]
INT_EDGES += [-62_135_596_800, -62_135_596_801, 253_402_300_799, 253_402_300_800]
INT_EDGES += [-(2**31), 2**31 - 1, -(2**63), 2**63 - 1, 2**32 - 1, 2**64 - 1]
STRINGS = ["", " ", "\x00", "a\x00b", "x" * 65, "é" * 300, "x" * 70_000, "🙂", "*", "%_\\"]
STRINGS += ["{a|b}", "{name}", "+", "+5511999998888", "5511999998888@s.whatsapp.net"]
PHONES = ["+5511999998888", "+15550001111", "+5511988887777"]
ALWAYS_SET = {"instance_id", "id"}
UPDATE_PATHS = ["display_name", "phone", "labels", "proxy_url", "send_policy", "*", "id"]


def ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({n for n in INT_EDGES if low <= n <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def strings() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(STRINGS), st.text(max_size=20))


def forged_token() -> st.SearchStrategy[str]:
    json_values = st.recursive(
        st.none() | st.booleans() | ints(-(2**64), 2**64) | st.floats() | strings(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=5,
    )
    payload = st.fixed_dictionaries(
        {"after": json_values}, optional={"v": st.sampled_from([1, 2, "1"]), "filter": strings()}
    )
    encode = lambda p: base64.urlsafe_b64encode(json.dumps(p).encode()).decode()  # noqa: E731
    return st.one_of(payload.map(encode), strings())


# Strategies for fields by name: enough meaningful values that calls get past the first check.
BY_NAME: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
    "instance_id": lambda: st.sampled_from([FUZZ_ID] * 4 + ["other", "", "UPPER"]),
    "id": lambda: st.sampled_from([FUZZ_ID] * 4 + ["other", "", "x" * 65]),
    "phone": lambda: st.one_of(st.sampled_from(PHONES * 2), strings()),
    "from_phone": lambda: st.one_of(st.sampled_from(PHONES * 2), strings()),
    "page_token": forged_token,
    "paths": lambda: st.one_of(st.sampled_from(UPDATE_PATHS), strings()),
}


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.name in BY_NAME:
        return BY_NAME[field.name]()
    kind = field.type
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), ints(*INT_RANGES[kind]))
    if kind in INT_RANGES:
        return ints(*INT_RANGES[kind])
    if kind == FieldDescriptor.TYPE_DOUBLE:
        edges = [0.0, -1.0, 1e308, float("inf"), float("nan")]
        return st.one_of(st.sampled_from(edges), st.floats())
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return strings()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=16), st.just(b"\x00" * 1_000_000))
    raise AssertionError(f"no strategy for {field.full_name}")


@functools.cache
def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`, each field unset or drawn (nested ones MAX_DEPTH deep)."""
    cls = message_factory.GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _value(field, depth)
        if value is not None:  # unset or drawn; the instance named is always drawn
            fields[field.name] = value if field.name in ALWAYS_SET else st.none() | value
    return st.fixed_dictionaries(fields).map(lambda drawn: _build(cls, descriptor, drawn))


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        one = scalar(field)
    elif field.message_type.GetOptions().map_entry:
        entry = field.message_type.fields_by_name
        return st.dictionaries(scalar(entry["key"]), scalar(entry["value"]), max_size=3)
    elif depth >= MAX_DEPTH:
        return None
    else:
        one = messages(field.message_type, depth + 1)
    is_repeated = field.is_repeated
    return st.lists(one, max_size=3) if is_repeated else one


def _build(cls: type[Message], descriptor: Descriptor, drawn: dict[str, Any]) -> Message:
    message = cls()
    for name, value in drawn.items():
        if value is None:
            continue
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if isinstance(value, dict):
            target.update(value)
        elif field.is_repeated:
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@dataclass
class Fuzzer:
    running: RunningGateway
    metadata: tuple[tuple[str, str], ...]

    def _codecs(self, method: MethodDescriptor) -> dict[str, Any]:
        return {
            "request_serializer": lambda m: m.SerializeToString(),
            "response_deserializer": message_factory.GetMessageClass(method.output_type).FromString,
        }

    async def call(self, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
        """Calls the RPC (a stream: until its first response or its headers, then cut short)
        and checks how it ended; returns the code."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        channel = self.running.channel
        try:
            if not method.server_streaming:
                unary = channel.unary_unary(path, **self._codecs(method))
                await unary(request, metadata=self.metadata, timeout=UNARY_TIMEOUT)
                return grpc.StatusCode.OK
            stream = channel.unary_stream(path, **self._codecs(method))(
                request, metadata=self.metadata, timeout=STREAM_TIMEOUT
            )
            await stream.initial_metadata()  # Subscribe sends these once it is in place
            if method.name != "Subscribe" and not stream.done():
                await stream.read()
            code = grpc.StatusCode.OK
            if stream.done():
                code = await stream.code()
                if code != grpc.StatusCode.OK:
                    await stream.read()  # raises the error, checked below
            stream.cancel()
            return code
        except grpc.aio.AioRpcError as error:
            return self._check(method, error)

    def _check(self, method: MethodDescriptor, error: grpc.aio.AioRpcError) -> grpc.StatusCode:
        code = error.code()
        if method.server_streaming and code in CUT_SHORT:
            return code
        assert code in DOCUMENTED, f"{method.name}: {code} {error.details()}"
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None, f"{method.name}: {code} without google.rpc details"
        infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        assert len(infos) == 1, f"{method.name}: {code} without an ErrorInfo"
        info = error_details_pb2.ErrorInfo()
        infos[0].Unpack(info)
        assert info.domain == "zapgate.v1"
        assert info.reason
        return code

    async def ensure_instance(self) -> None:
        """DeleteInstance may have removed it: every example starts with it in place."""
        stub = self.running.channel.unary_unary(
            "/zapgate.v1.InstanceService/CreateInstance",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=ipb.CreateInstanceResponse.FromString,
        )
        try:
            await stub(ipb.CreateInstanceRequest(instance_id=FUZZ_ID), metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:  # updated since: it exists
                raise

    async def queued(self) -> list[str]:
        stub = self.running.channel.unary_unary(
            "/zapgate.v1.MessageService/ListMessages",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=mpb.ListMessagesResponse.FromString,
        )
        listed = await stub(
            mpb.ListMessagesRequest(instance_id=FUZZ_ID, page_size=5), metadata=self.metadata
        )
        return [m.id for m in listed.messages]


@pytest.fixture(scope="module")
async def fuzzer(running: RunningGateway) -> Fuzzer:
    return Fuzzer(running, auth(await running.new_key("fuzz-tenant")))


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
@FUZZ
@given(data=st.data())
async def test_no_request_gets_internal_or_unknown(
    fuzzer: Fuzzer, method: MethodDescriptor, data: st.DataObject
) -> None:
    request = data.draw(messages(method.input_type), label="request")
    await fuzzer.ensure_instance()
    before = await fuzzer.queued() if method.name == "SendMessage" else []
    code = await fuzzer.call(method, request)
    if method.name == "SendMessage" and code != grpc.StatusCode.OK:
        assert await fuzzer.queued() == before, "a failed SendMessage queued a message"
