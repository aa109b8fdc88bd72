"""WhatsApp groups as the engines report them, whichever engine runs: zapgate's own types,
and their encoding across the worker's socket (JSON of the dataclasses: both ends are the
same zapgate build, so the dataclasses are the schema, as for engine events)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

GROUP_SERVER = "g.us"
INVITE_PREFIX = "https://chat.whatsapp.com/"
ROLES = ("member", "admin", "super_admin")
ACTIONS = ("add", "remove", "promote", "demote")
# A participant's outcome (ParticipantResult.status in group.proto).
OK = "ok"
INVITE_SENT = "invite_sent"
NOT_ON_WHATSAPP = "not_on_whatsapp"
ALREADY_PARTICIPANT = "already_participant"
NOT_PARTICIPANT = "not_participant"
NOT_ADMIN = "not_admin"
RATE_LIMITED = "rate_limited"
FAILED = "failed"


@dataclass(frozen=True)
class Participant:
    jid: str = ""  # phone-number JID, where known
    lid: str = ""
    phone: str = ""  # E.164, where known
    role: str = "member"  # one of ROLES
    display_name: str = ""


@dataclass(frozen=True)
class GroupInfo:
    jid: str
    name: str = ""
    topic: str = ""
    owner_jid: str = ""
    created_at: float = 0.0  # epoch seconds; 0 when unknown
    announce: bool = False
    locked: bool = False
    join_approval: bool = False
    participants: tuple[Participant, ...] = ()


@dataclass(frozen=True)
class ParticipantOutcome:
    """What became of one participant of an add, remove, promote or demote."""

    phone: str  # E.164, as asked
    status: str  # OK, INVITE_SENT, ...
    jid: str = ""
    error: str = ""  # WhatsApp's code, with FAILED


@dataclass(frozen=True)
class JoinRequest:
    """Someone waiting for an admin's approval to join a group."""

    jid: str = ""  # phone-number JID, where known
    lid: str = ""
    phone: str = ""  # E.164, where known
    requested_at: float = 0.0  # epoch seconds


def invite_code(link: str) -> str:
    """The code of an invite link (or the code itself)."""
    return link.strip().removeprefix(INVITE_PREFIX).strip("/")


def is_group_jid(jid: str) -> bool:
    user, _, server = jid.partition("@")
    return server == GROUP_SERVER and bool(user)


def encode(value: object) -> str:
    """A result of a group call (a dataclass, a list of them, a str, or None) as JSON."""
    return json.dumps(_plain(value))


def _plain(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def group_from_json(fields: dict[str, Any]) -> GroupInfo:
    participants = tuple(Participant(**p) for p in fields.pop("participants", ()))
    return GroupInfo(**fields, participants=participants)


def decode_group(text: str) -> GroupInfo:
    return group_from_json(json.loads(text))


def decode_groups(text: str) -> list[GroupInfo]:
    return [group_from_json(fields) for fields in json.loads(text)]


def decode_outcomes(text: str) -> list[ParticipantOutcome]:
    return [ParticipantOutcome(**fields) for fields in json.loads(text)]


def decode_created(text: str) -> tuple[GroupInfo, list[ParticipantOutcome]]:
    group, outcomes = json.loads(text)
    return group_from_json(group), [ParticipantOutcome(**fields) for fields in outcomes]


def decode_requests(text: str) -> list[JoinRequest]:
    return [JoinRequest(**fields) for fields in json.loads(text)]
