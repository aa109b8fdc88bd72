"""whatsmeow's groups as zapgate's (sessions/neonize_groups.py), offline: neonize's own
GroupInfo, GroupParticipant, GroupInfoEvent and JoinedGroup protobufs, with the fields its Go
side fills in, parsed from bytes the way neonize's client parses Go's answers; and the calls
the engine makes on a neonize client (JIDs, participant changes), checked on a recording
client, with neonize's own error types mapped to the engine's typed errors."""

from __future__ import annotations

import struct
import warnings
from typing import Any

import pytest

from tests.test_neonize_inbound import jid
from zapgate.sessions import groups as g
from zapgate.sessions import neonize_groups
from zapgate.sessions.errors import EngineError, GroupNotFound, NotAdmin, NotConnected
from zapgate.sessions.events import GroupChanged

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize import exc
    from neonize.proto import Neonize_pb2 as pb
    from neonize.utils.enum import ParticipantChange

KEY = "acme/groups-1"
WA, LID, GROUP = "s.whatsapp.net", "lid", "g.us"
ME = "5511900000001@s.whatsapp.net"


def float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def filled(message: Any) -> Any:
    """The message with every required field neonize's proto2 schema names and the test left
    unset given its zero value, as Go's encoder fills them (empty JIDs included)."""
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            if field.message_type is not None:
                for item in getattr(message, field.name):
                    filled(item)
            continue
        if field.message_type is not None:
            if field.is_required or message.HasField(field.name):
                sub = getattr(message, field.name)
                sub.SetInParent()
                if field.message_type.name == "JID" and not message.HasField(field.name):
                    sub.CopyFrom(jid("", ""))
                filled(sub)
        elif field.is_required and not message.HasField(field.name):
            setattr(message, field.name, field.default_value)
    return message


def participant(
    main: Any, *, pn: Any = None, lid: Any = None, admin: bool = False, error: int = 0, **more: Any
) -> Any:
    fields: dict[str, Any] = {
        "JID": main,
        "IsAdmin": admin,
        "IsSuperAdmin": more.pop("super_admin", False),
        "DisplayName": more.pop("name", ""),
        "Error": error,
        **more,
    }
    if pn is not None:
        fields["PhoneNumber"] = pn
    if lid is not None:
        fields["LID"] = lid
    return filled(pb.GroupParticipant(**fields))


def group_info(*participants: Any, **fields: Any) -> Any:
    info = pb.GroupInfo(
        JID=jid("120363025246125486", GROUP),
        OwnerJID=jid("98765432109876", LID),
        OwnerPN=jid("5511988887777", WA),
        GroupName=pb.GroupName(Name="Vendas SP", NameSetAt=1_700_000_000),
        GroupTopic=pb.GroupTopic(Topic="Só vendas", TopicID="T1"),
        GroupLocked=pb.GroupLocked(isLocked=True),
        GroupAnnounce=pb.GroupAnnounce(IsAnnounce=False),
        GroupCreated=1_700_000_123,
        ParticipantVersionID="v1",
        Participants=participants,
        **fields,
    )
    # As neonize's get_group_info reads Go's answer.
    answer = pb.GetGroupInfoReturnFunction(GroupInfo=filled(info))
    return pb.GetGroupInfoReturnFunction.FromString(answer.SerializeToString()).GroupInfo


def test_group_info_maps_names_settings_owner_and_roles() -> None:
    info = group_info(
        participant(jid("5511988887777", WA), lid=jid("98765432109876", LID), super_admin=True),
        # A LID-addressed group: the JID is the LID, the phone number comes alongside.
        participant(jid("11122233344455", LID), pn=jid("5521977776666", WA), admin=True),
        participant(jid("55544433322211", LID), name="Carla"),  # no number known
    )
    group = neonize_groups.to_group(info)
    assert group == g.GroupInfo(
        jid="120363025246125486@g.us",
        name="Vendas SP",
        topic="Só vendas",
        owner_jid="5511988887777@s.whatsapp.net",
        # neonize's GroupCreated is a 32-bit float: seconds since 1970 keep ~2 minutes of
        # precision (1_700_000_123 arrives as 1_700_000_128).
        created_at=float32(1_700_000_123),
        announce=False,
        locked=True,
        participants=(
            g.Participant(
                "5511988887777@s.whatsapp.net",
                "98765432109876@lid",
                "+5511988887777",
                "super_admin",
            ),
            g.Participant(
                "5521977776666@s.whatsapp.net", "11122233344455@lid", "+5521977776666", "admin"
            ),
            g.Participant("", "55544433322211@lid", "", "member", "Carla"),
        ),
    )


def test_owner_falls_back_to_the_lid_when_no_number_is_known() -> None:
    info = group_info()
    info.ClearField("OwnerPN")
    assert neonize_groups.to_group(info).owner_jid == "98765432109876@lid"


def test_participant_codes_become_per_participant_outcomes() -> None:
    answered = pb.UpdateGroupParticipantsReturnFunction(
        participants=[
            participant(jid("5511911110001", WA)),
            participant(
                jid("5511911110002", WA),
                error=403,
                AddRequest=pb.GroupParticipantAddRequest(Code="abc", Expiration=1.0),
            ),
            participant(jid("5511911110003", WA), error=409),
            participant(jid("77766655544433", LID), pn=jid("5511911110004", WA), error=500),
        ]
    )
    parsed = pb.UpdateGroupParticipantsReturnFunction.FromString(answered.SerializeToString())
    phones = ["+5511911110001", "+5511911110002", "+5511911110003", "+5511911110004", "+1555"]
    assert neonize_groups.outcomes("add", phones, parsed.participants) == [
        g.ParticipantOutcome(phones[0], "ok", "5511911110001@s.whatsapp.net"),
        g.ParticipantOutcome(phones[1], "invite_sent", "5511911110002@s.whatsapp.net", "403"),
        g.ParticipantOutcome(
            phones[2], "already_participant", "5511911110003@s.whatsapp.net", "409"
        ),
        g.ParticipantOutcome(phones[3], "failed", "77766655544433@lid", "500"),
        g.ParticipantOutcome(phones[4], "failed", error="no answer"),
    ]
    removed = neonize_groups.outcomes(
        "remove", ["+5511911110001"], [participant(jid("5511911110001", WA), error=404)]
    )
    assert removed == [
        g.ParticipantOutcome(
            "+5511911110001", "not_participant", "5511911110001@s.whatsapp.net", "404"
        )
    ]


def test_group_info_events_become_group_changes() -> None:
    event = pb.GroupInfoEvent(
        JID=jid("120363025246125486", GROUP),
        Sender=jid("5511988887777", WA),
        Timestamp=1_700_000_500,
        Join=[jid("5511911110001", WA), jid("5511900000001", WA)],
        Promote=[jid("5511911110001", WA)],
        Name=pb.GroupName(Name="Vendas Sul"),
        Topic=pb.GroupTopic(Topic="", TopicDeleted=True),
        Announce=pb.GroupAnnounce(IsAnnounce=True),
    )
    parsed = pb.GroupInfoEvent.FromString(filled(event).SerializeToString())
    changes = neonize_groups.to_group_changes(KEY, parsed, ME)
    group, actor, at = "120363025246125486@g.us", "5511988887777@s.whatsapp.net", 1_700_000_500.0
    joined = ("5511911110001@s.whatsapp.net", ME)
    assert changes == [
        GroupChanged(KEY, group, "added", actor, joined, timestamp=at),
        GroupChanged(KEY, group, "joined", actor, (ME,), timestamp=at),
        GroupChanged(KEY, group, "promoted", actor, joined[:1], timestamp=at),
        GroupChanged(KEY, group, "name", actor, name="Vendas Sul", timestamp=at),
        GroupChanged(KEY, group, "topic", actor, topic="", timestamp=at),
        GroupChanged(KEY, group, "settings", actor, announce=True, timestamp=at),
    ]
    timer = pb.GroupInfoEvent(
        JID=jid("120363025246125486", GROUP),
        Sender=jid("5511988887777", WA),
        Timestamp=1_700_000_600,
        Ephemeral=pb.GroupEphemeral(IsEphemeral=True, DisappearingTimer=86_400),
    )
    parsed = pb.GroupInfoEvent.FromString(filled(timer).SerializeToString())
    assert neonize_groups.to_group_changes(KEY, parsed, ME) == [
        GroupChanged(
            KEY, group, "ephemeral", actor, ephemeral_seconds=86_400, timestamp=1_700_000_600.0
        )
    ]
    off = pb.GroupInfoEvent(
        JID=jid("120363025246125486", GROUP),
        Ephemeral=pb.GroupEphemeral(IsEphemeral=False, DisappearingTimer=86_400),
    )
    [switched_off] = neonize_groups.to_group_changes(KEY, filled(off), ME)
    assert (switched_off.change, switched_off.ephemeral_seconds) == ("ephemeral", 0)
    left = pb.GroupInfoEvent(JID=jid("120363025246125486", GROUP), Leave=[jid("5511900000001", WA)])
    assert [c.change for c in neonize_groups.to_group_changes(KEY, left, ME)] == [
        "removed",
        "left",
    ]


def test_joined_group_is_this_account_added() -> None:
    event = pb.JoinedGroup(
        Reason="invite",
        Type="new",
        GroupInfo=group_info(),
        Sender=jid("98765432109876", LID),
        SenderPN=jid("5511988887777", WA),
    )
    parsed = pb.JoinedGroup.FromString(filled(event).SerializeToString())
    assert neonize_groups.to_group_changes(KEY, parsed, ME) == [
        GroupChanged(
            KEY,
            "120363025246125486@g.us",
            "joined",
            "5511988887777@s.whatsapp.net",
            (ME,),
            name="Vendas SP",
        )
    ]


class Recorder:
    """A neonize client that records the calls and answers as Go would (or fails as told)."""

    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answer, self.error = answer, error

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> Any:
            self.calls.append((name, args))
            if self.error is not None:
                raise self.error
            return self.answer

        return record


def test_participant_changes_are_asked_with_full_jids_and_neonize_actions() -> None:
    answered = [participant(jid("5511911110001", WA)), participant(jid("5511911110002", WA))]
    client = Recorder(answer=answered)
    found = neonize_groups.update_participants(
        client, KEY, "120363025246125486@g.us", "promote", ["+5511911110001", "+5511911110002"]
    )
    assert [o.status for o in found] == ["ok", "ok"]
    [(name, (group, people, action))] = client.calls
    assert name == "update_group_participants"
    assert action is ParticipantChange.PROMOTE
    # Go's Unmarshal needs every field of neonize's proto2 JID.
    assert group == jid("120363025246125486", GROUP)
    assert people == [jid("5511911110001", WA), jid("5511911110002", WA)]
    assert pb.JIDArray(JIDS=people).SerializeToString()


def test_create_group_maps_the_new_group_and_each_add() -> None:
    client = Recorder(
        answer=group_info(
            participant(jid("5511900000001", WA), super_admin=True),
            participant(jid("5511911110001", WA)),
            participant(jid("5511911110002", WA), error=403),
        )
    )
    group, outcomes = neonize_groups.create_group(
        client, KEY, "Vendas SP", ["+5511911110001", "+5511911110002"]
    )
    assert client.calls == [
        ("create_group", ("Vendas SP", [jid("5511911110001", WA), jid("5511911110002", WA)]))
    ]
    assert group.name == "Vendas SP"
    assert [o.status for o in outcomes] == ["ok", "invite_sent"]


def test_settings_topic_and_links_reach_the_right_calls() -> None:
    client = Recorder(answer="https://chat.whatsapp.com/AbCd1234")
    group = "120363025246125486@g.us"
    neonize_groups.set_settings(client, KEY, group, announce=True, locked=None)
    neonize_groups.set_topic(client, KEY, group, "Novo tópico")
    link = neonize_groups.invite_link(client, KEY, group, revoke=True)
    assert link == "https://chat.whatsapp.com/AbCd1234"
    group_jid = jid("120363025246125486", GROUP)
    assert client.calls == [
        ("set_group_announce", (group_jid, True)),
        ("set_group_topic", (group_jid, "", "", "Novo tópico")),
        ("get_group_invite_link", (group_jid, True)),
    ]
    with pytest.raises(EngineError, match="not a group JID"):
        neonize_groups.set_topic(client, KEY, "5511911110001@s.whatsapp.net", "x")


def test_join_requests_map_phone_and_lid_requesters_oldest_first() -> None:
    asked = [
        pb.GroupParticipantRequest(Participant=jid("5511911110001", WA), TimeAt=1_700_000_500),
        pb.GroupParticipantRequest(Participant=jid("98765432109876", LID), TimeAt=1_700_000_100),
    ]
    # As neonize's get_group_request_participants reads Go's answer.
    answer = pb.GetGroupRequestParticipantsReturnFunction(Participants=asked)
    parsed = pb.GetGroupRequestParticipantsReturnFunction.FromString(answer.SerializeToString())
    client = Recorder(answer=parsed.Participants)
    found = neonize_groups.join_requests(client, KEY, "120363025246125486@g.us")
    assert client.calls == [("get_group_request_participants", (jid("120363025246125486", GROUP),))]
    assert found == [
        g.JoinRequest(lid="98765432109876@lid", requested_at=1_700_000_100),
        g.JoinRequest(
            jid="5511911110001@s.whatsapp.net", phone="+5511911110001", requested_at=1_700_000_500
        ),
    ]


def test_a_group_photo_is_the_jpeg_bytes_and_its_picture_id() -> None:
    client = Recorder(answer="1700000999")
    jpeg = b"\xff\xd8\xff\xe0 a tiny jpeg"
    picture = neonize_groups.set_photo(client, KEY, "120363025246125486@g.us", jpeg)
    assert picture == "1700000999"
    assert client.calls == [("set_group_photo", (jid("120363025246125486", GROUP), jpeg))]
    refused = Recorder(error=exc.SetGroupPhotoError("info query returned status 403: forbidden"))
    with pytest.raises(NotAdmin):
        neonize_groups.set_photo(refused, KEY, "120363025246125486@g.us", jpeg)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (exc.UpdateGroupParticipantsError("info query returned status 403: forbidden"), NotAdmin),
        (exc.SetGroupNameError("server returned error 401: not-authorized"), NotAdmin),
        (exc.GetGroupInfoError("you're not participating in that group"), GroupNotFound),
        (exc.InviteLinkError("that group invite link has been revoked"), GroupNotFound),
        (exc.LeaveGroupError("websocket not connected"), NotConnected),
        (exc.CreateGroupError("something else"), EngineError),
    ],
)
def test_neonize_errors_become_typed_engine_errors(
    error: Exception, expected: type[EngineError]
) -> None:
    with pytest.raises(EngineError) as caught:
        neonize_groups.group_info(Recorder(error=error), KEY, "120363025246125486@g.us")
    assert type(caught.value) is expected
    assert KEY in str(caught.value)
