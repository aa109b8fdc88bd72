"""Conversions from zapgate's records and updates to the public protobuf messages."""

from __future__ import annotations

import asyncio
import functools
import io

import qrcode
from google.protobuf import timestamp_pb2

from zapgate.gateway.store.instances import InstanceRecord
from zapgate.gateway.updates import FinalUpdate, PairCodeUpdate, QrUpdate, StateUpdate, Update
from zapgate.v1 import instance_pb2 as pb


def instance_to_proto(record: InstanceRecord) -> pb.Instance:
    instance = pb.Instance(
        id=record.id,
        display_name=record.display_name,
        phone=record.phone,
        state=record.state,  # type: ignore[arg-type]
        labels=record.labels,
        create_time=timestamp(record.create_time_us),
        update_time=timestamp(record.update_time_us),
        state_reason=record.state_reason,  # type: ignore[arg-type]
        state_detail=record.state_detail,
        state_change_time=timestamp(record.state_change_time_us),
        jid=record.jid,
        ban_code=record.ban_code,
        keepalive_failing=record.keepalive_failing,
        proxy_url=record.proxy_url,
    )
    if record.state == pb.INSTANCE_STATE_BANNED:
        instance.ban_expire_time.CopyFrom(timestamp(record.ban_expire_us))
    return instance


async def update_to_proto(update: Update) -> pb.ConnectResponse:
    match update:
        case QrUpdate(code=code, index=index, expire_time_us=expire):
            png = await asyncio.to_thread(qr_png, code)
            qr = pb.QrCode(code=code, png=png, expire_time=timestamp(expire), index=index)
            return pb.ConnectResponse(qr_code=qr)
        case PairCodeUpdate(code=code, expire_time_us=expire):
            return pb.ConnectResponse(
                pair_code=pb.PairCode(code=code, expire_time=timestamp(expire))
            )
        case StateUpdate(state=state, reason=reason, detail=detail):
            change = pb.StateChange(state=state, reason=reason, detail=detail)  # type: ignore[arg-type]
            return pb.ConnectResponse(state_change=change)
        case FinalUpdate(outcome=outcome, record=record):
            result = pb.ConnectResult(outcome=outcome, instance=instance_to_proto(record))  # type: ignore[arg-type]
            return pb.ConnectResponse(result=result)


@functools.lru_cache(maxsize=256)
def qr_png(code: str) -> bytes:
    """The QR code as a PNG. Cached: every client watching a pairing gets the same bytes."""
    out = io.BytesIO()
    qrcode.make(code, border=2).save(out)
    return out.getvalue()


def timestamp(micros: int) -> timestamp_pb2.Timestamp:
    seconds, remainder = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=remainder * 1000)
