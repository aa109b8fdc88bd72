"""Helpers to read zapgate's rich error details in tests."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


async def expect_error(
    call: Awaitable[object], code: grpc.StatusCode
) -> tuple[error_details_pb2.ErrorInfo, list[tuple[str, str]]]:
    """Awaits a call that must fail with `code`; returns its ErrorInfo and field violations."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == code, error.details()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status details"
    info, violations = error_details_pb2.ErrorInfo(), []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    assert info.domain == "zapgate.v1"
    return info, violations
