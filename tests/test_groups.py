"""GroupService end to end through the simulator: groups created, read, listed and changed;
participants added (privacy refusals become invites), promoted, demoted, removed; invites;
a non-admin's changes refused; the group caps holding over a burst; GroupChanged events;
a message to a group sent once through the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import RunningGateway, started_gateway
from tests.messaging import FAST_POLICY, Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_events import subscribed, take
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import group_pb2 as pb
from zapgate.v1 import group_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

ANA, BRUNO, CARLA, DIEGO = "+5511970000101", "+5511970000102", "+5511970000103", "+5511970000104"
ADD, REMOVE = pb.PARTICIPANT_ACTION_ADD, pb.PARTICIPANT_ACTION_REMOVE
PROMOTE, DEMOTE = pb.PARTICIPANT_ACTION_PROMOTE, pb.PARTICIPANT_ACTION_DEMOTE


def jid(phone: str) -> str:
    return f"{phone[1:]}@s.whatsapp.net"


class Groups:
    """A tenant's GroupService, with the simulated phones around it."""

    def __init__(self, messenger: Messenger) -> None:
        self.messenger = messenger
        self.sim = messenger.client.sim
        self.stub = group_pb2_grpc.GroupServiceStub(messenger.client.channel)
        self.metadata = messenger.metadata

    async def ready(self, instance_id: str, phone: str, **caps: int) -> None:
        policy = ipb.SendPolicy()
        policy.CopyFrom(FAST_POLICY)
        for name, value in caps.items():
            setattr(policy, name, value)
        await self.messenger.ready(instance_id, phone, policy)

    async def create(self, instance_id: str, name: str, *phones: str) -> pb.CreateGroupResponse:
        request = pb.CreateGroupRequest(instance_id=instance_id, name=name, participants=phones)
        return await self.stub.CreateGroup(request, metadata=self.metadata)

    async def get(self, instance_id: str, group_jid: str) -> pb.Group:
        request = pb.GetGroupRequest(instance_id=instance_id, group_jid=group_jid)
        return (await self.stub.GetGroup(request, metadata=self.metadata)).group

    async def update(
        self, instance_id: str, group_jid: str, action: int, *phones: str
    ) -> dict[str, str]:
        request = pb.UpdateParticipantsRequest(
            instance_id=instance_id,
            group_jid=group_jid,
            action=action,  # type: ignore[arg-type]
            participants=phones,
        )
        reply = await self.stub.UpdateParticipants(request, metadata=self.metadata)
        return {result.phone: result.status for result in reply.results}

    async def change(self, instance_id: str, by: str, group_jid: str, **change: object) -> None:
        request = spb.ChangeGroupRequest(
            instance_id=instance_id,
            by_phone=by,
            group_jid=group_jid,
            **change,  # type: ignore[arg-type]
        )
        await self.sim.ChangeGroup(request, metadata=self.metadata)

    async def events(self, instance_id: str) -> AsyncIterator[epb.SubscribeResponse]:
        return await subscribed(
            self.messenger,
            only_new=True,
            instance_ids=[instance_id],
            types=[epb.EVENT_TYPE_GROUP_CHANGED],
        )


@pytest.fixture
async def groups(running: RunningGateway, tenant: str) -> Groups:
    return Groups(Messenger(await SimClient.for_tenant(running, tenant)))


def roles(group: pb.Group) -> dict[str, int]:
    return {p.phone: p.role for p in group.participants}


async def test_create_read_list_and_change_a_group(groups: Groups) -> None:
    me = "+5511970000001"
    await groups.ready("g1", me)
    events = await groups.events("g1")
    created = await groups.create("g1", "  Vendas SP ", ANA, BRUNO)
    group = created.group
    assert group.jid.endswith("@g.us")
    assert group.name == "Vendas SP"
    assert group.owner_jid == jid(me)
    assert group.create_time.seconds > 0
    assert [(r.phone, r.status, r.jid) for r in created.results] == [
        (ANA, "ok", jid(ANA)),
        (BRUNO, "ok", jid(BRUNO)),
    ]
    assert roles(group) == {
        me: pb.PARTICIPANT_ROLE_SUPER_ADMIN,
        ANA: pb.PARTICIPANT_ROLE_MEMBER,
        BRUNO: pb.PARTICIPANT_ROLE_MEMBER,
    }
    assert all(p.lid.endswith("@lid") and p.jid == jid(p.phone) for p in group.participants)

    await groups.stub.SetGroupName(
        pb.SetGroupNameRequest(instance_id="g1", group_jid=group.jid, name="Vendas Sul"),
        metadata=groups.metadata,
    )
    await groups.stub.SetGroupTopic(
        pb.SetGroupTopicRequest(instance_id="g1", group_jid=group.jid, topic="Só vendas"),
        metadata=groups.metadata,
    )
    await groups.stub.SetGroupSettings(
        pb.SetGroupSettingsRequest(instance_id="g1", group_jid=group.jid, announce=True),
        metadata=groups.metadata,
    )
    read = await groups.get("g1", group.jid)
    assert (read.name, read.topic) == ("Vendas Sul", "Só vendas")
    assert (read.settings.announce, read.settings.locked) == (True, False)

    second = (await groups.create("g1", "Suporte")).group
    listed = await groups.stub.ListGroups(
        pb.ListGroupsRequest(instance_id="g1", page_size=1), metadata=groups.metadata
    )
    rest = await groups.stub.ListGroups(
        pb.ListGroupsRequest(instance_id="g1", page_token=listed.next_page_token),
        metadata=groups.metadata,
    )
    assert listed.next_page_token
    assert not rest.next_page_token
    pages = [*listed.groups, *rest.groups]
    assert sorted(g.jid for g in pages) == sorted([group.jid, second.jid])
    assert [g.jid for g in pages] == sorted(g.jid for g in pages)
    counted = {g.name: (g.participant_count, len(g.participants)) for g in pages}
    assert counted == {"Vendas Sul": (3, 0), "Suporte": (1, 0)}

    changes = [e.group_changed for e in await take(events, 6)]
    assert [(c.change, c.group_jid) for c in changes] == [
        (epb.GROUP_CHANGE_JOINED, group.jid),
        (epb.GROUP_CHANGE_PARTICIPANTS_ADDED, group.jid),
        (epb.GROUP_CHANGE_NAME, group.jid),
        (epb.GROUP_CHANGE_TOPIC, group.jid),
        (epb.GROUP_CHANGE_SETTINGS, group.jid),
        (epb.GROUP_CHANGE_JOINED, second.jid),
    ]
    assert all(c.actor_jid == jid(me) for c in changes)
    assert list(changes[1].participants) == [jid(ANA), jid(BRUNO)]
    assert (changes[2].name, changes[3].topic) == ("Vendas Sul", "Só vendas")
    assert changes[4].HasField("announce")
    assert changes[4].announce
    assert not changes[4].HasField("locked")


async def test_participants_added_refused_promoted_demoted_and_removed(groups: Groups) -> None:
    me = "+5511970000002"
    await groups.ready("g2", me)
    group = (await groups.create("g2", "Time", ANA)).group
    await groups.sim.SetGroupPrivacy(
        spb.SetGroupPrivacyRequest(instance_id="g2", phones=[CARLA], refuse_adds=True),
        metadata=groups.metadata,
    )
    await groups.sim.SetRegisteredNumbers(
        spb.SetRegisteredNumbersRequest(instance_id="g2", phones=[me, ANA, BRUNO, CARLA]),
        metadata=groups.metadata,
    )
    events = await groups.events("g2")
    added = await groups.update("g2", group.jid, ADD, ANA, BRUNO, CARLA, DIEGO)
    assert added == {
        ANA: "already_participant",
        BRUNO: "ok",
        CARLA: "invite_sent",
        DIEGO: "not_on_whatsapp",
    }
    assert await groups.update("g2", group.jid, PROMOTE, BRUNO) == {BRUNO: "ok"}
    assert roles(await groups.get("g2", group.jid))[BRUNO] == pb.PARTICIPANT_ROLE_ADMIN
    assert await groups.update("g2", group.jid, DEMOTE, BRUNO) == {BRUNO: "ok"}
    assert await groups.update("g2", group.jid, REMOVE, ANA, CARLA) == {
        ANA: "ok",
        CARLA: "not_participant",
    }
    assert roles(await groups.get("g2", group.jid)) == {
        me: pb.PARTICIPANT_ROLE_SUPER_ADMIN,
        BRUNO: pb.PARTICIPANT_ROLE_MEMBER,
    }
    changes = [e.group_changed for e in await take(events, 4)]
    assert [(c.change, list(c.participants)) for c in changes] == [
        (epb.GROUP_CHANGE_PARTICIPANTS_ADDED, [jid(BRUNO)]),
        (epb.GROUP_CHANGE_PARTICIPANTS_PROMOTED, [jid(BRUNO)]),
        (epb.GROUP_CHANGE_PARTICIPANTS_DEMOTED, [jid(BRUNO)]),
        (epb.GROUP_CHANGE_PARTICIPANTS_REMOVED, [jid(ANA)]),
    ]


async def test_a_member_who_is_no_admin_is_refused_until_promoted(groups: Groups) -> None:
    me = "+5511970000003"
    await groups.ready("g3", me)
    theirs = "120363000000000003@g.us"
    events = await groups.events("g3")
    await groups.change("g3", ANA, theirs, create_name="Família")
    group = await groups.get("g3", theirs)
    assert roles(group) == {ANA: pb.PARTICIPANT_ROLE_SUPER_ADMIN, me: pb.PARTICIPANT_ROLE_MEMBER}
    assert group.owner_jid == jid(ANA)

    info, _ = await expect_error(
        groups.update("g3", theirs, ADD, BRUNO), grpc.StatusCode.PERMISSION_DENIED
    )
    assert info.reason == "GROUP_NOT_ADMIN"
    refused = groups.stub.SetGroupSettings(
        pb.SetGroupSettingsRequest(instance_id="g3", group_jid=theirs, locked=True),
        metadata=groups.metadata,
    )
    assert (await expect_error(refused, grpc.StatusCode.PERMISSION_DENIED))[0].reason == (
        "GROUP_NOT_ADMIN"
    )
    link = groups.stub.GetInviteLink(
        pb.GetInviteLinkRequest(instance_id="g3", group_jid=theirs), metadata=groups.metadata
    )
    await expect_error(link, grpc.StatusCode.PERMISSION_DENIED)
    # The adds refused for want of admin rights cost nothing.
    stats = await groups.messenger.client.instances.GetInstanceStats(
        ipb.GetInstanceStatsRequest(instance_id="g3"), metadata=groups.metadata
    )
    assert stats.stats.remaining_participant_adds_hour == 20

    await groups.change(
        "g3", ANA, theirs, participants=spb.SimParticipantsChange(action="promote", phones=[me])
    )
    await groups.change("g3", ANA, theirs, name="Família Silva")
    assert await groups.update("g3", theirs, ADD, BRUNO) == {BRUNO: "ok"}
    assert roles(await groups.get("g3", theirs))[me] == pb.PARTICIPANT_ROLE_ADMIN

    changes = [e.group_changed for e in await take(events, 4)]
    assert [(c.change, c.actor_jid) for c in changes] == [
        (epb.GROUP_CHANGE_JOINED, jid(ANA)),
        (epb.GROUP_CHANGE_PARTICIPANTS_PROMOTED, jid(ANA)),
        (epb.GROUP_CHANGE_NAME, jid(ANA)),
        (epb.GROUP_CHANGE_PARTICIPANTS_ADDED, jid(me)),
    ]
    assert list(changes[0].participants) == [jid(me)]
    assert changes[2].name == "Família Silva"

    # Removed by the owner: this account is out, and the group is no longer its to read.
    await groups.change(
        "g3", ANA, theirs, participants=spb.SimParticipantsChange(action="remove", phones=[me])
    )
    info, _ = await expect_error(groups.get("g3", theirs), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "GROUP_NOT_FOUND"


async def test_invite_links_preview_join_revoke_and_leave(groups: Groups) -> None:
    await groups.ready("g4", "+5511970000004")
    group = (await groups.create("g4", "Clube", ANA)).group
    link = (
        await groups.stub.GetInviteLink(
            pb.GetInviteLinkRequest(instance_id="g4", group_jid=group.jid),
            metadata=groups.metadata,
        )
    ).invite_link
    assert link.startswith("https://chat.whatsapp.com/")
    events = await groups.events("g4")
    await groups.stub.LeaveGroup(
        pb.LeaveGroupRequest(instance_id="g4", group_jid=group.jid), metadata=groups.metadata
    )
    listed = await groups.stub.ListGroups(
        pb.ListGroupsRequest(instance_id="g4"), metadata=groups.metadata
    )
    assert list(listed.groups) == []
    preview = await groups.stub.PreviewInvite(
        pb.PreviewInviteRequest(instance_id="g4", invite_link=link), metadata=groups.metadata
    )
    assert (preview.group.jid, preview.group.name) == (group.jid, "Clube")
    joined = await groups.stub.JoinGroup(
        pb.JoinGroupRequest(instance_id="g4", invite_link=link.rsplit("/", 1)[1]),
        metadata=groups.metadata,
    )
    assert joined.group_jid == group.jid
    changes = [e.group_changed.change for e in await take(events, 2)]
    assert changes == [epb.GROUP_CHANGE_LEFT, epb.GROUP_CHANGE_JOINED]

    # Rejoined as a member: a new link needs an admin; the owner makes one.
    await groups.change(
        "g4",
        ANA,
        group.jid,
        participants=spb.SimParticipantsChange(action="promote", phones=["+5511970000004"]),
    )
    revoked = await groups.stub.GetInviteLink(
        pb.GetInviteLinkRequest(instance_id="g4", group_jid=group.jid, revoke=True),
        metadata=groups.metadata,
    )
    assert revoked.invite_link != link
    stale = groups.stub.PreviewInvite(
        pb.PreviewInviteRequest(instance_id="g4", invite_link=link), metadata=groups.metadata
    )
    assert (await expect_error(stale, grpc.StatusCode.NOT_FOUND))[0].reason == "GROUP_NOT_FOUND"


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return retry.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo")


async def test_group_caps_hold_over_a_burst(groups: Groups) -> None:
    await groups.ready(
        "g5",
        "+5511970000005",
        groups_created_per_day=2,
        participants_added_per_hour=3,
        participants_added_per_day=4,
    )
    first = await groups.create("g5", "Um", ANA)
    assert [r.status for r in first.results] == ["ok"]
    await groups.create("g5", "Dois")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await groups.create("g5", "Três", BRUNO)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < retry_delay(caught.value) <= 86_400
    info, _ = await expect_error(groups.create("g5", "Três"), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert info.reason == "RATE_LIMITED"

    # One add spent on the create; two left this hour. Already-there costs nothing.
    burst = await groups.update("g5", first.group.jid, ADD, ANA, BRUNO, CARLA, DIEGO)
    assert burst == {
        ANA: "already_participant",
        BRUNO: "ok",
        CARLA: "rate_limited",
        DIEGO: "rate_limited",
    }
    assert await groups.update("g5", first.group.jid, ADD, CARLA, DIEGO) == {
        CARLA: "ok",
        DIEGO: "rate_limited",
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await groups.update("g5", first.group.jid, ADD, DIEGO)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < retry_delay(caught.value) <= 3_600
    # Removing is not capped.
    assert await groups.update("g5", first.group.jid, REMOVE, CARLA) == {CARLA: "ok"}

    reply = await groups.messenger.client.instances.GetInstanceStats(
        ipb.GetInstanceStatsRequest(instance_id="g5"), metadata=groups.metadata
    )
    stats = reply.stats
    assert stats.remaining_group_creations_day == 0
    assert stats.remaining_participant_adds_hour == 0
    assert stats.remaining_participant_adds_day == 1
    read = await groups.get("g5", first.group.jid)
    assert sorted(p.phone for p in read.participants) == sorted(["+5511970000005", ANA, BRUNO])


async def test_default_caps_are_documented_and_visible(groups: Groups) -> None:
    await groups.messenger.client.create("g6")
    instance = await groups.messenger.client.get("g6")
    policy = instance.send_policy
    assert (
        policy.groups_created_per_day,
        policy.participants_added_per_hour,
        policy.participants_added_per_day,
    ) == (3, 20, 50)
    reply = await groups.messenger.client.instances.GetInstanceStats(
        ipb.GetInstanceStatsRequest(instance_id="g6"), metadata=groups.metadata
    )
    assert reply.stats.remaining_group_creations_day == 3
    assert reply.stats.remaining_participant_adds_day == 50


async def test_a_message_to_a_group_is_sent_once_through_the_scheduler(groups: Groups) -> None:
    await groups.ready("g7", "+5511970000007")
    group = (await groups.create("g7", "Avisos", ANA, BRUNO)).group
    messenger = groups.messenger
    request = mpb.SendMessageRequest(
        instance_id="g7", jid=group.jid, text=mpb.Text(body="Reunião às 10h")
    )
    queued = (await messenger.stub.SendMessage(request, metadata=groups.metadata)).message
    assert queued.recipient_jid == group.jid
    sent = await messenger.wait_message(
        "g7", queued.id, lambda m: m.state == mpb.MESSAGE_STATE_SENT
    )
    assert sent.whatsapp_message_id
    received = await messenger.client.sim.ListReceived(
        spb.ListReceivedRequest(instance_id="g7"), metadata=groups.metadata
    )
    texts = [(r.recipient_jid, r.text) for r in received.messages if r.kind == "text"]
    assert texts == [(group.jid, "Reunião às 10h")]
    stats = await messenger.client.instances.GetInstanceStats(
        ipb.GetInstanceStatsRequest(instance_id="g7"), metadata=groups.metadata
    )
    assert stats.stats.sent_today == 1


async def test_bad_requests_and_unknown_groups(groups: Groups) -> None:
    await groups.ready("g8", "+5511970000008")
    bad = groups.stub.UpdateParticipants(
        pb.UpdateParticipantsRequest(
            instance_id="g8", group_jid="nope", participants=["123", ANA, ANA]
        ),
        metadata=groups.metadata,
    )
    _, violations = await expect_error(bad, grpc.StatusCode.INVALID_ARGUMENT)
    fields = {field for field, _ in violations}
    assert {"action", "group_jid", "participants", "participants[0]"} <= fields
    named = groups.create("g8", " ")
    assert (await expect_error(named, grpc.StatusCode.INVALID_ARGUMENT))[1][0][0] == "name"
    unknown = groups.get("g8", "120363999999999999@g.us")
    info, _ = await expect_error(unknown, grpc.StatusCode.NOT_FOUND)
    assert info.reason == "GROUP_NOT_FOUND"


async def test_the_caps_hold_across_a_restart(tmp_path: Path) -> None:
    async with started_gateway(tmp_path) as first:
        groups = Groups(Messenger(await SimClient.for_tenant(first, "acme")))
        await groups.ready(
            "kept", "+5511970000009", groups_created_per_day=1, participants_added_per_hour=5
        )
        created = await groups.create("kept", "Antes", ANA, BRUNO)
        assert [r.status for r in created.results] == ["ok", "ok"]
        assert await groups.update("kept", created.group.jid, ADD, ANA, CARLA) == {
            ANA: "already_participant",
            CARLA: "ok",
        }
    async with started_gateway(tmp_path) as second:
        groups = Groups(Messenger(await SimClient.for_tenant(second, "acme")))
        reply = await groups.messenger.client.instances.GetInstanceStats(
            ipb.GetInstanceStatsRequest(instance_id="kept"), metadata=groups.metadata
        )
        assert reply.stats.remaining_group_creations_day == 0
        assert reply.stats.remaining_participant_adds_hour == 2  # 5 - ANA, BRUNO, CARLA
        info, _ = await expect_error(
            groups.create("kept", "Depois"), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert info.reason == "RATE_LIMITED"


async def test_an_instance_not_connected_is_refused_cleanly(groups: Groups) -> None:
    await groups.messenger.client.create("g9")
    listed = groups.stub.ListGroups(
        pb.ListGroupsRequest(instance_id="g9"), metadata=groups.metadata
    )
    info, _ = await expect_error(listed, grpc.StatusCode.FAILED_PRECONDITION)
    assert info.reason in ("INSTANCE_NOT_RUNNING", "INSTANCE_NOT_CONNECTED")
    # A creation the engine could not make costs nothing.
    await expect_error(groups.create("g9", "Nada", ANA), grpc.StatusCode.FAILED_PRECONDITION)
    reply = await groups.messenger.client.instances.GetInstanceStats(
        ipb.GetInstanceStatsRequest(instance_id="g9"), metadata=groups.metadata
    )
    assert reply.stats.remaining_group_creations_day == 3
    assert reply.stats.remaining_participant_adds_day == 50


async def test_group_events_stay_within_their_tenant(running: RunningGateway, tenant: str) -> None:
    a = Groups(Messenger(await SimClient.for_tenant(running, tenant)))
    b = Groups(Messenger(await SimClient.for_tenant(running, f"{tenant}-b")))
    await a.ready("same", "+5511970000010")
    await b.ready("same", "+5511970000011")  # the same instance id, another tenant
    seen_by_b = await subscribed(b.messenger, only_new=True, types=[epb.EVENT_TYPE_GROUP_CHANGED])
    await a.create("same", "De A")
    await b.create("same", "De B")
    [event] = await take(seen_by_b, 1)
    assert event.group_changed.change == epb.GROUP_CHANGE_JOINED
    assert event.group_changed.actor_jid == jid("+5511970000011")
    named = await b.get("same", event.group_changed.group_jid)
    assert named.name == "De B"


async def test_a_group_photo_and_join_requests(groups: Groups) -> None:
    await groups.ready("g9", "+5511970000009")
    created = await groups.create("g9", "Loja")
    group_jid = created.group.jid

    def photo(jpeg: bytes) -> grpc.aio.UnaryUnaryCall[Any, pb.SetGroupPhotoResponse]:
        request = pb.SetGroupPhotoRequest(instance_id="g9", group_jid=group_jid, jpeg=jpeg)
        return groups.stub.SetGroupPhoto(request, metadata=groups.metadata)

    assert (await photo(b"\xff\xd8\xff\xe0 a small picture")).picture_id
    _, violations = await expect_error(photo(b"\x89PNG..."), grpc.StatusCode.INVALID_ARGUMENT)
    assert violations[0][0] == "jpeg"
    too_big = photo(b"\xff\xd8\xff" + bytes(1024 * 1024))
    assert (await expect_error(too_big, grpc.StatusCode.INVALID_ARGUMENT))[1][0][0] == "jpeg"

    async def waiting(instance_id: str, group: str) -> list[str]:
        request = pb.ListJoinRequestsRequest(instance_id=instance_id, group_jid=group)
        reply = await groups.stub.ListJoinRequests(request, metadata=groups.metadata)
        assert all(r.request_time.seconds > 0 for r in reply.requests)
        return [r.phone for r in reply.requests]

    assert await waiting("g9", group_jid) == []
    await groups.change("g9", DIEGO, group_jid, request_join=True)
    await groups.change("g9", CARLA, group_jid, request_join=True)
    assert await waiting("g9", group_jid) == [DIEGO, CARLA]  # oldest first
    assert await groups.update("g9", group_jid, ADD, DIEGO) == {DIEGO: "ok"}
    assert await waiting("g9", group_jid) == [CARLA]  # added: no longer waiting

    # A member who is not an admin may not read them.
    theirs = "120363000000000009@g.us"
    await groups.change("g9", ANA, theirs, create_name="Deles")
    info, _ = await expect_error(waiting("g9", theirs), grpc.StatusCode.PERMISSION_DENIED)
    assert info.reason == "GROUP_NOT_ADMIN"
