"""Conversions from zapgate's records and updates to the public protobuf messages."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io

import qrcode
from google.protobuf import timestamp_pb2

from zapgate.gateway.connections.updates import (
    FinalUpdate,
    PairCodeUpdate,
    QrUpdate,
    StateUpdate,
    Update,
)
from zapgate.gateway.sending.dispatcher import policy_of
from zapgate.gateway.store.instances import InstanceRecord
from zapgate.gateway.store.messages import MessageRecord
from zapgate.ratelimit.decisions import InstanceStats
from zapgate.ratelimit.policy import DEFAULT_POLICY, SendPolicy
from zapgate.ratelimit.waiting import Waiting
from zapgate.v1 import instance_pb2 as pb
from zapgate.v1 import message_pb2


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
        send_policy=policy_to_proto(policy_of(record)),
        call_settings=pb.CallSettings(**(record.call_settings or {})),
        sending_paused_reason=record.sending_paused_reason,
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


def message_to_proto(record: MessageRecord, waiting: Waiting | None = None) -> message_pb2.Message:
    """`waiting`: the scheduler's report for a QUEUED message (Scheduler.waiting)."""
    message = message_pb2.Message(
        id=record.id,
        instance_id=record.instance_id,
        recipient_jid=record.recipient_jid,
        state=record.state,  # type: ignore[arg-type]
        failure_reason=record.failure_reason,
        failure_detail=record.failure_detail,
        kind=record.kind,
        priority=record.priority,
        idempotency_key=record.idempotency_key or "",
        whatsapp_message_id=record.whatsapp_message_id,
        reply_to=record.content.get("reply_to", ""),
        mentions=record.content.get("mention_phones", []),
        target_message_id=record.content.get("target_id", ""),
        view_once=bool(record.content.get("view_once")),
    )
    # Set in place: a Timestamp passed to the constructor is built, then copied in.
    message.create_time.FromMicroseconds(record.create_time_us)
    message.update_time.FromMicroseconds(record.update_time_us)
    message.send_at.FromMicroseconds(record.send_at_us)
    if record.expire_us is not None:
        message.expire_time.FromMicroseconds(record.expire_us)
    if record.sent_time_us is not None:
        message.sent_time.FromMicroseconds(record.sent_time_us)
    if waiting is not None and record.state == message_pb2.MESSAGE_STATE_QUEUED:
        message.waiting_reason = waiting_reason_to_proto(waiting)
        message.next_attempt_time.FromMicroseconds(round(waiting.next_attempt_at * 1e6))
    return message


def waiting_reason_to_proto(waiting: Waiting) -> message_pb2.WaitingReason.ValueType:
    return message_pb2.WaitingReason.Value(f"WAITING_REASON_{waiting.reason.name}")


def policy_to_proto(policy: SendPolicy) -> pb.SendPolicy:
    return pb.SendPolicy(**dataclasses.asdict(policy))


def policy_from_proto(message: pb.SendPolicy) -> SendPolicy:
    values = {f.name: getattr(message, f.name) for f in dataclasses.fields(SendPolicy)}
    for optional in ("quiet_start_hour", "quiet_end_hour"):
        if not message.HasField(optional):
            values[optional] = None
    # Fields added after clients stored policies: unset means the default.
    if not message.HasField("groups_created_per_day"):
        values["groups_created_per_day"] = DEFAULT_POLICY.groups_created_per_day
    if not message.HasField("participants_added_per_hour"):
        values["participants_added_per_hour"] = DEFAULT_POLICY.participants_added_per_hour
    if not message.HasField("participants_added_per_day"):
        values["participants_added_per_day"] = DEFAULT_POLICY.participants_added_per_day
    return SendPolicy(**values)


def stats_to_proto(
    stats: InstanceStats, delivery_rate: float, read_rate: float
) -> pb.InstanceStats:
    """Scheduler figures, with receipt rates over the outbox's recent sent messages."""
    message = pb.InstanceStats(
        sent_today=stats.sent_today,
        remaining_minute=stats.remaining_minute,
        remaining_hour=stats.remaining_hour,
        remaining_day=stats.remaining_today,
        remaining_new_contacts=stats.remaining_new_contacts_today,
        queue_depth=stats.queued + (1 if stats.in_flight else 0),
        paused_reason=stats.paused_reason or "",
        delivery_rate=delivery_rate,
        read_rate=read_rate,
    )
    if stats.next_send_at is not None:
        message.next_send_time.CopyFrom(timestamp(int(stats.next_send_at * 1e6)))
    waiting = stats.waiting
    if waiting is not None:
        message.next_message_id = waiting.message_id
        message.waiting_reason = waiting_reason_to_proto(waiting)
        message.next_attempt_time.FromMicroseconds(round(waiting.next_attempt_at * 1e6))
    return message


def timestamp(micros: int) -> timestamp_pb2.Timestamp:
    seconds, remainder = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=remainder * 1000)
