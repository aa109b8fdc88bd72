"""The neonize engine's group calls (neonize_groups.py maps them), each one reader call."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from zapgate.sessions import neonize_groups
from zapgate.sessions.events import InstanceKey
from zapgate.sessions.groups import GroupInfo, JoinRequest, ParticipantOutcome
from zapgate.sessions.neonize_reader import NeonizeReader

T = TypeVar("T")


class NeonizeGroupOps(NeonizeReader):
    async def _group(self, key: InstanceKey, doing: str, call: Callable[[Any], T]) -> T:
        return await self._read(self._connected(key, doing), call)

    async def list_groups(self, key: InstanceKey) -> list[GroupInfo]:
        return await self._group(key, "list groups", partial(neonize_groups.list_groups, key=key))

    async def group_info(self, key: InstanceKey, group_jid: str) -> GroupInfo:
        call = partial(neonize_groups.group_info, key=key, group=group_jid)
        return await self._group(key, "read a group", call)

    async def create_group(
        self, key: InstanceKey, name: str, phones: list[str]
    ) -> tuple[GroupInfo, list[ParticipantOutcome]]:
        call = partial(neonize_groups.create_group, key=key, name=name, phones=phones)
        return await self._group(key, "create a group", call)

    async def update_participants(
        self, key: InstanceKey, group_jid: str, action: str, phones: list[str]
    ) -> list[ParticipantOutcome]:
        call = partial(
            neonize_groups.update_participants,
            key=key,
            group=group_jid,
            action=action,
            phones=phones,
        )
        return await self._group(key, "change participants", call)

    async def set_group_name(self, key: InstanceKey, group_jid: str, name: str) -> None:
        def rename(client: Any) -> None:
            to = neonize_groups.group_jid(group_jid)
            neonize_groups.call(key, "rename the group", lambda: client.set_group_name(to, name))

        await self._group(key, "rename a group", rename)

    async def set_group_topic(self, key: InstanceKey, group_jid: str, topic: str) -> None:
        call = partial(neonize_groups.set_topic, key=key, group=group_jid, topic=topic)
        await self._group(key, "describe a group", call)

    async def set_group_settings(
        self, key: InstanceKey, group_jid: str, announce: bool | None, locked: bool | None
    ) -> None:
        call = partial(
            neonize_groups.set_settings, key=key, group=group_jid, announce=announce, locked=locked
        )
        await self._group(key, "change a group", call)

    async def set_group_photo(self, key: InstanceKey, group_jid: str, data: bytes) -> str:
        call = partial(neonize_groups.set_photo, key=key, group=group_jid, data=data)
        return await self._group(key, "change a group's picture", call)

    async def join_requests(self, key: InstanceKey, group_jid: str) -> list[JoinRequest]:
        call = partial(neonize_groups.join_requests, key=key, group=group_jid)
        return await self._group(key, "read join requests", call)

    async def invite_link(self, key: InstanceKey, group_jid: str, revoke: bool) -> str:
        call = partial(neonize_groups.invite_link, key=key, group=group_jid, revoke=revoke)
        return await self._group(key, "read an invite link", call)

    async def preview_invite(self, key: InstanceKey, code: str) -> GroupInfo:
        def preview(client: Any) -> GroupInfo:
            info = neonize_groups.call(
                key, "read the invite", lambda: client.get_group_info_from_link(code)
            )
            return neonize_groups.to_group(info)

        return await self._group(key, "read an invite", preview)

    async def join_group(self, key: InstanceKey, code: str) -> str:
        call = partial(neonize_groups.join_group, key=key, code=code)
        return await self._group(key, "join a group", call)

    async def leave_group(self, key: InstanceKey, group_jid: str) -> None:
        def leave(client: Any) -> None:
            to = neonize_groups.group_jid(group_jid)
            neonize_groups.call(key, "leave the group", lambda: client.leave_group(to))

        await self._group(key, "leave a group", leave)
