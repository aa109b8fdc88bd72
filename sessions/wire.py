"""Engine events across the worker's unix socket: a JSON object with the event's kind and
its fields. Both ends are the same zapgate build, so the dataclasses are the schema."""

from __future__ import annotations

import dataclasses
import json
import typing

from zapgate.sessions import events
from zapgate.sessions.events import EngineEvent

_KINDS: dict[str, type[EngineEvent]] = {
    cls.__name__: cls for cls in typing.get_args(events.EngineEvent)
}


def encode(event: EngineEvent) -> str:
    return json.dumps({"kind": type(event).__name__, **dataclasses.asdict(event)})


def decode(text: str) -> EngineEvent:
    fields = json.loads(text)
    kind = _KINDS.get(fields.pop("kind", None))
    if kind is None:
        raise ValueError(f"unknown engine event: {text[:80]}")
    return kind(**fields)
