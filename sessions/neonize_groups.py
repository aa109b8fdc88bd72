"""whatsmeow's groups (neonize's GroupInfo, GroupParticipant, GroupInfoEvent, JoinedGroup
protobufs) as zapgate's groups and GroupChanged events, and the group calls on a neonize
client. The mapping is pure; the calls take the client (the engine runs them as readers of
its gate, on a call thread) and turn neonize's errors into the engine's typed ones.

neonize 0.5.2 quirks, checked on its protobufs: GroupInfo.GroupCreated is a 32-bit float, so
a creation time arrives rounded to about two minutes; every participant carries a PhoneNumber
and a LID (proto2 required), an empty JID when WhatsApp sent none; GroupInfo has no join
approval setting, so `join_approval` is always False from this engine."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from zapgate.sessions import groups as g
from zapgate.sessions.errors import EngineError, GroupNotFound, NotAdmin, NotConnected
from zapgate.sessions.events import GroupChanged, InstanceKey
from zapgate.sessions.neonize_events import LID_SERVER, USER_SERVER, phone_number, user_jid
from zapgate.sessions.neonize_send import jid

T = TypeVar("T")
pb: Any = importlib.import_module("neonize.proto.Neonize_pb2")
neonize_client: Any = importlib.import_module("neonize.client")
ParticipantChange: Any = importlib.import_module("neonize.utils.enum").ParticipantChange

# The neonize events `to_group_changes` maps (the engine subscribes to them).
GROUP_EVENT_TYPES: tuple[Any, ...] = (pb.GroupInfoEvent, pb.JoinedGroup)
# whatsmeow's errors (and WhatsApp's IQ codes in them) by what they mean.
_NOT_FOUND = (
    "not participating",
    "group not found",
    "invite link is not valid",
    "invite link has been revoked",
    "item-not-found",
    "status 404",
)
_NOT_ADMIN = ("unauthorized", "forbidden", "not-authorized", "status 401", "status 403")
_INSTANCE_DOWN = ("websocket not connected", "client is nil")
# A participant's code in an answer to UpdateGroupParticipants (WhatsApp's, per participant).
_ADD_CODES = {403: g.INVITE_SENT, 409: g.ALREADY_PARTICIPANT, 404: g.NOT_ON_WHATSAPP}
_OTHER_CODES = {404: g.NOT_PARTICIPANT, 406: g.NOT_ADMIN, 401: g.NOT_ADMIN, 403: g.NOT_ADMIN}


# -- mapping ------------------------------------------------------------------------------------


def to_group(info: Any) -> g.GroupInfo:
    owner = info.OwnerPN if phone_number(info.OwnerPN) else info.OwnerJID
    return g.GroupInfo(
        jid=user_jid(info.JID),
        name=str(info.GroupName.Name),
        topic=str(info.GroupTopic.Topic),
        owner_jid=user_jid(owner),
        created_at=float(info.GroupCreated),
        announce=bool(info.GroupAnnounce.IsAnnounce),
        locked=bool(info.GroupLocked.isLocked),
        participants=tuple(to_participant(p) for p in info.Participants),
    )


def to_participant(participant: Any) -> g.Participant:
    """whatsmeow names a participant by JID (a phone number or, in LID groups, a LID) and
    fills the other address where WhatsApp sent it."""
    pn = participant.PhoneNumber if participant.HasField("PhoneNumber") else None
    lid = participant.LID if participant.HasField("LID") else None
    main = participant.JID
    if str(main.Server) == USER_SERVER:
        pn = main
    elif str(main.Server) == LID_SERVER:
        lid = main
    role = "super_admin" if participant.IsSuperAdmin else "admin" if participant.IsAdmin else ""
    return g.Participant(
        jid=user_jid(pn) if pn is not None and phone_number(pn) else "",
        lid=user_jid(lid) if lid is not None else "",
        phone=phone_number(pn) if pn is not None else "",
        role=role or "member",
        display_name=str(participant.DisplayName),
    )


def outcomes(action: str, phones: list[str], answered: Iterable[Any]) -> list[g.ParticipantOutcome]:
    """One outcome per phone asked, from UpdateGroupParticipants' (or CreateGroup's)
    participants: each carries WhatsApp's code (0: done; 403 on an add: their privacy
    refused it, and `AddRequest` holds the invite WhatsApp sent instead)."""
    by_digits: dict[str, Any] = {}
    for participant in answered:
        for address in (participant.JID, participant.PhoneNumber):
            if str(address.Server) == USER_SERVER and address.User:
                by_digits.setdefault(str(address.User), participant)
    found = []
    for phone in phones:
        participant = by_digits.get(phone.lstrip("+"))
        if participant is None:
            found.append(g.ParticipantOutcome(phone, g.FAILED, error="no answer"))
            continue
        code = int(participant.Error)
        address = user_jid(participant.JID)
        if code == 0:
            found.append(g.ParticipantOutcome(phone, g.OK, address))
            continue
        table = _ADD_CODES if action == "add" else _OTHER_CODES
        status = table.get(code, g.FAILED)
        if action == "add" and participant.HasField("AddRequest"):
            status = g.INVITE_SENT
        found.append(g.ParticipantOutcome(phone, status, address, str(code)))
    return found


def to_group_changes(key: InstanceKey, event: Any, me: str) -> list[GroupChanged]:
    """A GroupInfoEvent (one notification may carry several changes) or a JoinedGroup (this
    account was added to a group, created it or joined it) as GroupChanged events. `me` is
    the account's user JID."""
    if isinstance(event, pb.JoinedGroup):
        info = to_group(event.GroupInfo)
        actor = _actor(event.SenderPN, event.Sender)
        return [GroupChanged(key, info.jid, "joined", actor, (me,), name=info.name)]
    group = user_jid(event.JID)
    actor = _actor(None, event.Sender)
    at = float(event.Timestamp)
    changes: list[GroupChanged] = []
    for field, change in (("Join", "added"), ("Leave", "removed")):
        people = tuple(user_jid(p) for p in getattr(event, field))
        if people:
            changes.append(GroupChanged(key, group, change, actor, people, timestamp=at))
            if me in people:
                mine = "joined" if change == "added" else "left"
                changes.append(GroupChanged(key, group, mine, actor, (me,), timestamp=at))
    for field, change in (("Promote", "promoted"), ("Demote", "demoted")):
        people = tuple(user_jid(p) for p in getattr(event, field))
        if people:
            changes.append(GroupChanged(key, group, change, actor, people, timestamp=at))
    if event.HasField("Name"):
        name = str(event.Name.Name)
        changes.append(GroupChanged(key, group, "name", actor, name=name, timestamp=at))
    if event.HasField("Topic"):
        topic = "" if event.Topic.TopicDeleted else str(event.Topic.Topic)
        changes.append(GroupChanged(key, group, "topic", actor, topic=topic, timestamp=at))
    announce = bool(event.Announce.IsAnnounce) if event.HasField("Announce") else None
    locked = bool(event.Locked.isLocked) if event.HasField("Locked") else None
    if announce is not None or locked is not None:
        changes.append(
            GroupChanged(
                key, group, "settings", actor, announce=announce, locked=locked, timestamp=at
            )
        )
    if event.HasField("Ephemeral"):
        # whatsmeow's GroupEphemeral: the timer in seconds, IsEphemeral false when switched off.
        timer = event.Ephemeral
        seconds = int(timer.DisappearingTimer) if timer.IsEphemeral else 0
        changes.append(
            GroupChanged(key, group, "ephemeral", actor, ephemeral_seconds=seconds, timestamp=at)
        )
    return changes


def _actor(pn: Any, sender: Any) -> str:
    if pn is not None and phone_number(pn):
        return user_jid(pn)
    return user_jid(sender) if sender is not None and sender.User else ""


# -- requests -----------------------------------------------------------------------------------


def group_jid(text: str) -> Any:
    if not g.is_group_jid(text):
        raise EngineError(f"not a group JID (...@g.us): {text!r}")
    return jid(text.partition("@")[0], g.GROUP_SERVER)


def phone_jids(phones: list[str]) -> list[Any]:
    return [jid(phone.lstrip("+"), USER_SERVER) for phone in phones]


def change_of(action: str) -> Any:
    if action not in g.ACTIONS:
        raise EngineError(f"unknown participant action {action!r}")
    return ParticipantChange[action.upper()]


def group_error(key: InstanceKey, doing: str, text: str) -> EngineError:
    lowered = text.lower()
    if any(known in lowered for known in _INSTANCE_DOWN):
        return NotConnected(f"{key} could not {doing}: it is not connected ({text})")
    if any(known in lowered for known in _NOT_FOUND):
        return GroupNotFound(f"{key} could not {doing}: {text}")
    if any(known in lowered for known in _NOT_ADMIN):
        return NotAdmin(f"{key} could not {doing}: only group admins may ({text})")
    return EngineError(f"{key} could not {doing}: {text}")


def call(key: InstanceKey, doing: str, function: Callable[[], T]) -> T:
    """Runs one group call of a neonize client; its error as the engine's typed one."""
    try:
        return function()
    except neonize_client.NeonizeError as error:
        raise group_error(key, doing, str(error)) from error


# -- the calls (on a call thread, as readers of the engine's gate) ------------------------------


def list_groups(client: Any, key: InstanceKey) -> list[g.GroupInfo]:
    joined = call(key, "list its groups", client.get_joined_groups)
    return sorted((to_group(info) for info in joined), key=lambda group: group.jid)


def group_info(client: Any, key: InstanceKey, group: str) -> g.GroupInfo:
    return to_group(call(key, "read the group", lambda: client.get_group_info(group_jid(group))))


def create_group(
    client: Any, key: InstanceKey, name: str, phones: list[str]
) -> tuple[g.GroupInfo, list[g.ParticipantOutcome]]:
    info = call(key, "create a group", lambda: client.create_group(name, phone_jids(phones)))
    return to_group(info), outcomes("add", phones, info.Participants)


def update_participants(
    client: Any, key: InstanceKey, group: str, action: str, phones: list[str]
) -> list[g.ParticipantOutcome]:
    answered = call(
        key,
        f"{action} participants",
        lambda: client.update_group_participants(
            group_jid(group), phone_jids(phones), change_of(action)
        ),
    )
    return outcomes(action, phones, answered)


def set_settings(
    client: Any, key: InstanceKey, group: str, announce: bool | None, locked: bool | None
) -> None:
    if announce is not None:
        call(key, "change the group", lambda: client.set_group_announce(group_jid(group), announce))
    if locked is not None:
        call(key, "change the group", lambda: client.set_group_locked(group_jid(group), locked))


def set_topic(client: Any, key: InstanceKey, group: str, topic: str) -> None:
    # Empty ids: whatsmeow reads the current topic's id and makes a new one itself.
    call(key, "describe the group", lambda: client.set_group_topic(group_jid(group), "", "", topic))


def join_group(client: Any, key: InstanceKey, code: str) -> str:
    return user_jid(call(key, "join the group", lambda: client.join_group_with_link(code)))


def to_join_request(request: Any) -> g.JoinRequest:
    """whatsmeow names who asks by a phone-number JID or, in LID groups, a LID."""
    who = request.Participant
    is_phone = str(who.Server) == USER_SERVER
    return g.JoinRequest(
        jid=user_jid(who) if is_phone else "",
        lid=user_jid(who) if str(who.Server) == LID_SERVER else "",
        phone=phone_number(who) if is_phone else "",
        requested_at=float(request.TimeAt),
    )


def set_photo(client: Any, key: InstanceKey, group: str, data: bytes) -> str:
    to = group_jid(group)
    return str(call(key, "change the group's picture", lambda: client.set_group_photo(to, data)))


def join_requests(client: Any, key: InstanceKey, group: str) -> list[g.JoinRequest]:
    to = group_jid(group)
    asked = call(key, "read the join requests", lambda: client.get_group_request_participants(to))
    return sorted((to_join_request(r) for r in asked), key=lambda r: r.requested_at)


def invite_link(client: Any, key: InstanceKey, group: str, revoke: bool) -> str:
    link = str(
        call(
            key,
            "read the invite link",
            lambda: client.get_group_invite_link(group_jid(group), revoke),
        )
    )
    return link if link.startswith("https://") else g.INVITE_PREFIX + link
