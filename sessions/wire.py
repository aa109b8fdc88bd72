"""Engine events across the worker's unix socket: a JSON object with the event's kind and
its fields. Both ends are the same zapgate build, so the dataclasses are the schema."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Literal

from zapgate.engine.v1 import worker_pb2
from zapgate.sessions import events
from zapgate.sessions.engine import Contact, Media, MessageRef, NumberCheck, OutgoingContent
from zapgate.sessions.events import EngineEvent

_KINDS: dict[str, type[EngineEvent]] = {
    cls.__name__: cls for cls in typing.get_args(events.EngineEvent)
}


def encode(event: EngineEvent) -> str:
    return json.dumps({"event": type(event).__name__, **dataclasses.asdict(event)})


# Fields holding a tuple of dataclasses (JSON objects on the wire).
_NESTED: dict[str, type[Any]] = {"chats": events.HistoryChat, "messages": events.HistoryMessage}


def decode(text: str) -> EngineEvent:
    fields = json.loads(text)
    kind = _KINDS.get(fields.pop("event", None))
    if kind is None:
        raise ValueError(f"unknown engine event: {text[:80]}")
    # JSON has no tuples; the event dataclasses use them for sequences.
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if kind is events.HistorySynced:
        for name, item in _NESTED.items():
            values[name] = tuple(item(**entry) for entry in values.get(name, ()))
    return kind(**values)


_MEDIA_KINDS: tuple[Literal["image", "video", "audio", "document", "sticker"], ...] = (
    "image",
    "video",
    "audio",
    "document",
    "sticker",
)
_LINK = ("link_url", "link_title", "link_description", "link_thumbnail")


def content_to_proto(content: OutgoingContent) -> worker_pb2.Content:
    message = worker_pb2.Content(
        text=content.text,
        voice_note=content.voice_note,
        has_location=content.latitude is not None,
        latitude=content.latitude or 0.0,
        longitude=content.longitude or 0.0,
        location_name=content.location_name,
        location_address=content.location_address,
        contact_name=content.contact_name,
        contact_vcard=content.contact_vcard,
        mentions=list(content.mentions),
        action=content.action,
        reaction_emoji=content.reaction_emoji,
        poll_question=content.poll_question,
        poll_options=list(content.poll_options),
        poll_selectable=content.poll_selectable,
        view_once=content.view_once,
        **{field: getattr(content, field) for field in _LINK},
    )
    for name in ("quote", "target"):
        ref = getattr(content, name)
        if ref is not None:
            getattr(message, name).CopyFrom(worker_pb2.MessageRef(**dataclasses.asdict(ref)))
    for kind in _MEDIA_KINDS:
        media = getattr(content, kind)
        if media is not None:
            getattr(message, kind).CopyFrom(worker_pb2.Media(**dataclasses.asdict(media)))
    return message


def content_from_proto(message: worker_pb2.Content) -> OutgoingContent:
    media = {
        kind: Media(
            **{f.name: getattr(getattr(message, kind), f.name) for f in dataclasses.fields(Media)}
        )
        for kind in _MEDIA_KINDS
        if message.HasField(kind)
    }
    return OutgoingContent(
        text=message.text,
        voice_note=message.voice_note,
        latitude=message.latitude if message.has_location else None,
        longitude=message.longitude if message.has_location else None,
        location_name=message.location_name,
        location_address=message.location_address,
        contact_name=message.contact_name,
        contact_vcard=message.contact_vcard,
        quote=_ref(message.quote) if message.HasField("quote") else None,
        mentions=tuple(message.mentions),
        action=message.action,
        target=_ref(message.target) if message.HasField("target") else None,
        reaction_emoji=message.reaction_emoji,
        poll_question=message.poll_question,
        poll_options=tuple(message.poll_options),
        poll_selectable=message.poll_selectable,
        view_once=message.view_once,
        link_url=message.link_url,
        link_title=message.link_title,
        link_description=message.link_description,
        link_thumbnail=message.link_thumbnail,
        **media,
    )


def _ref(message: worker_pb2.MessageRef) -> MessageRef:
    return MessageRef(**{f.name: getattr(message, f.name) for f in dataclasses.fields(MessageRef)})


def contact_to_proto(contact: Contact) -> worker_pb2.Contact:
    return worker_pb2.Contact(**dataclasses.asdict(contact))


def contact_from_proto(message: worker_pb2.Contact) -> Contact:
    return Contact(**{f.name: getattr(message, f.name) for f in dataclasses.fields(Contact)})


def check_to_proto(check: NumberCheck) -> worker_pb2.NumberCheck:
    return worker_pb2.NumberCheck(**dataclasses.asdict(check))


def check_from_proto(message: worker_pb2.NumberCheck) -> NumberCheck:
    return NumberCheck(message.phone, message.on_whatsapp, message.jid)
