"""A message's state as its event in the log (MessageStateChanged): the journal the outbox
commits with every state change."""

from __future__ import annotations

from typing import Any

from zapgate.gateway.events.log import EventLog
from zapgate.gateway.store.messages import MessageRecord
from zapgate.v1 import event_pb2

NOBODY = ("", "")


def state_event(
    message: MessageRecord, receipt_from: tuple[str, str] = NOBODY
) -> event_pb2.MessageStateChanged:
    return event_pb2.MessageStateChanged(
        message_id=message.id,
        state=message.state,  # type: ignore[arg-type]
        failure_reason=message.failure_reason,
        failure_detail=message.failure_detail,
        recipient_jid=message.recipient_jid,
        whatsapp_message_id=message.whatsapp_message_id,
        receipt_from_jid=receipt_from[0],
        receipt_from_lid=receipt_from[1],
    )


class MessageEvents:
    """The outbox's journal (store/messages.Journal), writing to the event log."""

    def __init__(self, events: EventLog) -> None:
        self._events = events

    def row(self, message: MessageRecord, receipt_from: tuple[str, str] = NOBODY) -> dict[str, Any]:
        event = state_event(message, receipt_from)
        return self._events.row(message.tenant, message.instance_id, event)

    def committed(self) -> None:
        self._events.committed()
