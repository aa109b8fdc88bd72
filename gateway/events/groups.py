"""Group changes the engines report become durable events (GroupChanged), appended with the
instance's tenant scope like every other event."""

from __future__ import annotations

from zapgate.sessions.events import GroupChanged
from zapgate.v1 import event_pb2 as pb

CHANGES = {
    "added": pb.GROUP_CHANGE_PARTICIPANTS_ADDED,
    "removed": pb.GROUP_CHANGE_PARTICIPANTS_REMOVED,
    "promoted": pb.GROUP_CHANGE_PARTICIPANTS_PROMOTED,
    "demoted": pb.GROUP_CHANGE_PARTICIPANTS_DEMOTED,
    "name": pb.GROUP_CHANGE_NAME,
    "topic": pb.GROUP_CHANGE_TOPIC,
    "settings": pb.GROUP_CHANGE_SETTINGS,
    "joined": pb.GROUP_CHANGE_JOINED,
    "left": pb.GROUP_CHANGE_LEFT,
    "ephemeral": pb.GROUP_CHANGE_EPHEMERAL,
}


def to_proto(change: GroupChanged) -> pb.GroupChanged:
    message = pb.GroupChanged(
        group_jid=change.group_jid,
        change=CHANGES.get(change.change, pb.GROUP_CHANGE_UNSPECIFIED),
        actor_jid=change.actor_jid,
        participants=list(change.participants),
        name=change.name,
        topic=change.topic,
        ephemeral_seconds=change.ephemeral_seconds,
    )
    if change.announce is not None:
        message.announce = change.announce
    if change.locked is not None:
        message.locked = change.locked
    return message
