"""GroupService: an instance's WhatsApp groups, through its engine (gateway/groups.py)."""

from __future__ import annotations

import re
from typing import Any

import grpc.aio

from zapgate.gateway.groups import GroupDesk, without_participants
from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import FieldViolation
from zapgate.gateway.rpc.paging import GROUP_JID, decode_page_token, encode_page_token, page_size
from zapgate.gateway.rpc.validation import check_instance_id, check_phone, raise_if_any
from zapgate.gateway.services.convert import timestamp
from zapgate.sessions import groups as g
from zapgate.sessions.groups import GroupInfo, JoinRequest, ParticipantOutcome
from zapgate.v1 import group_pb2 as pb
from zapgate.v1 import group_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
GROUP_JID_TEXT = re.compile(r"[0-9]{5,30}(-[0-9]{5,20})?@g\.us")
INVITE = re.compile(r"(https://chat\.whatsapp\.com/)?[A-Za-z0-9_-]{8,64}")
MAX_NAME_CHARS = 100
MAX_TOPIC_CHARS = 2048
MAX_PARTICIPANTS = 256
MAX_PHOTO_BYTES = 1024 * 1024
JPEG_MAGIC = b"\xff\xd8\xff"
ROLES = {
    "member": pb.PARTICIPANT_ROLE_MEMBER,
    "admin": pb.PARTICIPANT_ROLE_ADMIN,
    "super_admin": pb.PARTICIPANT_ROLE_SUPER_ADMIN,
}
ACTIONS = {
    pb.PARTICIPANT_ACTION_ADD: "add",
    pb.PARTICIPANT_ACTION_REMOVE: "remove",
    pb.PARTICIPANT_ACTION_PROMOTE: "promote",
    pb.PARTICIPANT_ACTION_DEMOTE: "demote",
}


class GroupService(group_pb2_grpc.GroupServiceServicer):
    def __init__(self, desk: GroupDesk) -> None:
        self._desk = desk
        self._engines = desk.engines

    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: Context
    ) -> pb.ListGroupsResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        limit = page_size(request.page_size)
        after = decode_page_token(request.page_token, request.instance_id, GROUP_JID)
        found = await self._engines.list_groups(current_tenant(), request.instance_id)
        rest = [group for group in found if after is None or group.jid > after]
        page = rest[:limit]
        token = encode_page_token(page[-1].jid, request.instance_id) if len(rest) > limit else ""
        return pb.ListGroupsResponse(
            groups=[_group(without_participants(gr), len(gr.participants)) for gr in page],
            next_page_token=token,
        )

    async def GetGroup(self, request: pb.GetGroupRequest, context: Context) -> pb.GetGroupResponse:
        _check(request.instance_id, group_jid=request.group_jid)
        info = await self._engines.group_info(
            current_tenant(), request.instance_id, request.group_jid
        )
        return pb.GetGroupResponse(group=_group(info))

    async def CreateGroup(
        self, request: pb.CreateGroupRequest, context: Context
    ) -> pb.CreateGroupResponse:
        _check(request.instance_id, name=request.name, phones=list(request.participants))
        group, outcomes = await self._desk.create(
            current_tenant(), request.instance_id, request.name.strip(), list(request.participants)
        )
        return pb.CreateGroupResponse(group=_group(group), results=_results(outcomes))

    async def UpdateParticipants(
        self, request: pb.UpdateParticipantsRequest, context: Context
    ) -> pb.UpdateParticipantsResponse:
        action = ACTIONS.get(request.action)
        extra = [] if action else [FieldViolation("action", "add, remove, promote or demote")]
        phones = list(request.participants)
        _check(request.instance_id, extra, group_jid=request.group_jid, phones=phones, need=True)
        assert action is not None
        outcomes = await self._desk.update_participants(
            current_tenant(), request.instance_id, request.group_jid, action, phones
        )
        return pb.UpdateParticipantsResponse(results=_results(outcomes))

    async def SetGroupName(
        self, request: pb.SetGroupNameRequest, context: Context
    ) -> pb.SetGroupNameResponse:
        _check(request.instance_id, group_jid=request.group_jid, name=request.name)
        await self._engines.set_group_name(
            current_tenant(), request.instance_id, request.group_jid, request.name.strip()
        )
        return pb.SetGroupNameResponse()

    async def SetGroupTopic(
        self, request: pb.SetGroupTopicRequest, context: Context
    ) -> pb.SetGroupTopicResponse:
        extra = []
        if len(request.topic) > MAX_TOPIC_CHARS or "\x00" in request.topic:
            extra.append(FieldViolation("topic", f"at most {MAX_TOPIC_CHARS} characters"))
        _check(request.instance_id, extra, group_jid=request.group_jid)
        await self._engines.set_group_topic(
            current_tenant(), request.instance_id, request.group_jid, request.topic
        )
        return pb.SetGroupTopicResponse()

    async def SetGroupSettings(
        self, request: pb.SetGroupSettingsRequest, context: Context
    ) -> pb.SetGroupSettingsResponse:
        announce = request.announce if request.HasField("announce") else None
        locked = request.locked if request.HasField("locked") else None
        extra = []
        if announce is None and locked is None:
            extra.append(FieldViolation("announce", "set announce, locked or both"))
        _check(request.instance_id, extra, group_jid=request.group_jid)
        await self._engines.set_group_settings(
            current_tenant(), request.instance_id, request.group_jid, announce, locked
        )
        return pb.SetGroupSettingsResponse()

    async def GetInviteLink(
        self, request: pb.GetInviteLinkRequest, context: Context
    ) -> pb.GetInviteLinkResponse:
        _check(request.instance_id, group_jid=request.group_jid)
        link = await self._engines.invite_link(
            current_tenant(), request.instance_id, request.group_jid, request.revoke
        )
        return pb.GetInviteLinkResponse(invite_link=link)

    async def PreviewInvite(
        self, request: pb.PreviewInviteRequest, context: Context
    ) -> pb.PreviewInviteResponse:
        _check(request.instance_id, invite=request.invite_link)
        info = await self._engines.preview_invite(
            current_tenant(), request.instance_id, g.invite_code(request.invite_link)
        )
        return pb.PreviewInviteResponse(group=_group(info))

    async def JoinGroup(
        self, request: pb.JoinGroupRequest, context: Context
    ) -> pb.JoinGroupResponse:
        _check(request.instance_id, invite=request.invite_link)
        jid = await self._engines.join_group(
            current_tenant(), request.instance_id, g.invite_code(request.invite_link)
        )
        return pb.JoinGroupResponse(group_jid=jid)

    async def LeaveGroup(
        self, request: pb.LeaveGroupRequest, context: Context
    ) -> pb.LeaveGroupResponse:
        _check(request.instance_id, group_jid=request.group_jid)
        await self._engines.leave_group(current_tenant(), request.instance_id, request.group_jid)
        return pb.LeaveGroupResponse()

    async def SetGroupPhoto(
        self, request: pb.SetGroupPhotoRequest, context: Context
    ) -> pb.SetGroupPhotoResponse:
        extra = []
        if not request.jpeg.startswith(JPEG_MAGIC):
            extra.append(FieldViolation("jpeg", "a JPEG image"))
        elif len(request.jpeg) > MAX_PHOTO_BYTES:
            extra.append(FieldViolation("jpeg", f"at most {MAX_PHOTO_BYTES} bytes"))
        _check(request.instance_id, extra, group_jid=request.group_jid)
        picture_id = await self._engines.set_group_photo(
            current_tenant(), request.instance_id, request.group_jid, request.jpeg
        )
        return pb.SetGroupPhotoResponse(picture_id=picture_id)

    async def ListJoinRequests(
        self, request: pb.ListJoinRequestsRequest, context: Context
    ) -> pb.ListJoinRequestsResponse:
        _check(request.instance_id, group_jid=request.group_jid)
        waiting = await self._engines.join_requests(
            current_tenant(), request.instance_id, request.group_jid
        )
        return pb.ListJoinRequestsResponse(requests=[_join_request(r) for r in waiting])


def _join_request(request: JoinRequest) -> pb.JoinRequest:
    message = pb.JoinRequest(jid=request.jid, lid=request.lid, phone=request.phone)
    if request.requested_at:
        message.request_time.CopyFrom(timestamp(round(request.requested_at * 1e6)))
    return message


def _check(
    instance_id: str,
    extra: list[FieldViolation] | None = None,
    *,
    group_jid: str | None = None,
    name: str | None = None,
    phones: list[str] | None = None,
    invite: str | None = None,
    need: bool = False,
) -> None:
    violations = check_instance_id("instance_id", instance_id) + (extra or [])
    if group_jid is not None and not GROUP_JID_TEXT.fullmatch(group_jid):
        violations.append(FieldViolation("group_jid", "a group JID such as 1203630000@g.us"))
    if name is not None and not 1 <= len(name.strip()) <= MAX_NAME_CHARS:
        violations.append(FieldViolation("name", f"1 to {MAX_NAME_CHARS} characters"))
    if phones is not None:
        if need and not phones:
            violations.append(FieldViolation("participants", "at least one number"))
        if len(phones) > MAX_PARTICIPANTS:
            violations.append(FieldViolation("participants", f"at most {MAX_PARTICIPANTS}"))
        if len(set(phones)) != len(phones):
            violations.append(FieldViolation("participants", "each number once"))
        for index, phone in enumerate(phones[:MAX_PARTICIPANTS]):
            violations += check_phone(f"participants[{index}]", phone)
    if invite is not None and not INVITE.fullmatch(invite.strip()):
        violations.append(
            FieldViolation("invite_link", "https://chat.whatsapp.com/<code>, or the code")
        )
    raise_if_any(violations)


def _group(info: GroupInfo, count: int | None = None) -> pb.Group:
    message = pb.Group(
        jid=info.jid,
        name=info.name,
        topic=info.topic,
        owner_jid=info.owner_jid,
        settings=pb.GroupSettings(
            announce=info.announce, locked=info.locked, join_approval=info.join_approval
        ),
        participants=[
            pb.GroupParticipant(
                jid=p.jid,
                lid=p.lid,
                phone=p.phone,
                role=ROLES.get(p.role, pb.PARTICIPANT_ROLE_UNSPECIFIED),
                display_name=p.display_name,
            )
            for p in info.participants
        ],
        participant_count=len(info.participants) if count is None else count,
    )
    if info.created_at:
        message.create_time.CopyFrom(timestamp(round(info.created_at * 1e6)))
    return message


def _results(outcomes: list[ParticipantOutcome]) -> list[pb.ParticipantResult]:
    return [
        pb.ParticipantResult(phone=o.phone, jid=o.jid, status=o.status, error=o.error)
        for o in outcomes
    ]
