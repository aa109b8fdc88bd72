"""The simulated account's WhatsApp groups, kept in its session store file (as WhatsApp keeps
them on its servers: they outlive reconnects and worker restarts).

WhatsApp's rules, as the simulator keeps them: only admins add, remove, promote or demote,
change settings or read the invite link and the join requests; anyone may rename, describe
or change the picture of a group unless it is locked; a number whose privacy settings
refuse adds gets an invite instead; a number not on WhatsApp cannot be added. Every change
yields GroupChanged events, returned to the engine (which reports them on its event loop).
Synchronous: the engine runs these on a thread."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from zapgate.sessions import groups as g
from zapgate.sessions.errors import EngineError, GroupNotFound, NotAdmin
from zapgate.sessions.events import GroupChanged, InstanceKey
from zapgate.sessions.sim_store import SimStore

SCHEMA = "CREATE TABLE IF NOT EXISTS sim_groups (jid TEXT PRIMARY KEY, data TEXT NOT NULL)"
# Invite codes of every simulated account of this worker: a link made by one instance can be
# previewed or joined by another hosted by the same worker (as on WhatsApp; instances on
# other workers find only their own links). Group JID by code.
_INVITES: dict[str, str] = {}
_GROUP_STORES: dict[str, SimStore] = {}  # group JID -> the store holding it


@dataclass
class SimGroup:
    jid: str
    name: str
    owner: str
    created: float
    topic: str = ""
    announce: bool = False
    locked: bool = False
    members: dict[str, str] = field(default_factory=dict)  # user JID -> role
    invite: str = ""
    photo: str = ""  # the picture's id
    requests: dict[str, float] = field(default_factory=dict)  # user JID -> asked at

    def info(self) -> g.GroupInfo:
        return g.GroupInfo(
            jid=self.jid,
            name=self.name,
            topic=self.topic,
            owner_jid=self.owner,
            created_at=self.created,
            announce=self.announce,
            locked=self.locked,
            participants=tuple(
                g.Participant(jid=jid, lid=lid_of(jid), phone=phone_of(jid), role=role)
                for jid, role in sorted(self.members.items())
            ),
        )


def user_of(phone: str) -> str:
    return f"{phone.lstrip('+')}@s.whatsapp.net"


def phone_of(jid: str) -> str:
    return "+" + jid.partition("@")[0].partition(":")[0]


def lid_of(jid: str) -> str:
    """The simulator's LID of a number: stable, and unlike the number (as real LIDs are)."""
    return f"{int(jid.partition('@')[0].partition(':')[0][::-1]) + 10**14}@lid"


class SimGroups:
    def __init__(
        self,
        key: InstanceKey,
        store: SimStore,
        me: str,
        registered: Callable[[str], bool],
        refuses_adds: Callable[[str], bool],
    ) -> None:
        self.key = key
        self.store = store
        self.me = me  # the account's user JID
        self.registered = registered  # phone digits -> on WhatsApp
        self.refuses_adds = refuses_adds  # phone digits -> privacy refuses adds

    # -- what the account does ----------------------------------------------------------------

    def all_groups(self) -> list[g.GroupInfo]:
        return [group.info() for group in self._all() if self.me in group.members]

    def info(self, jid: str) -> g.GroupInfo:
        return self._mine(jid).info()

    def create(
        self, name: str, phones: list[str]
    ) -> tuple[tuple[g.GroupInfo, list[g.ParticipantOutcome]], list[GroupChanged]]:
        group = SimGroup(
            jid=f"120363{secrets.randbelow(10**12):012d}@g.us",
            name=name,
            owner=self.me,
            created=time.time(),
            members={self.me: "super_admin"},
        )
        outcomes, added = self._add(group, phones)
        self._save(group)
        events = [GroupChanged(self.key, group.jid, "joined", self.me, (self.me,), name=name)]
        if added:
            events.append(self._event(group, "added", self.me, added))
        return (group.info(), outcomes), events

    def update(
        self, jid: str, action: str, phones: list[str]
    ) -> tuple[list[g.ParticipantOutcome], list[GroupChanged]]:
        group = self._mine(jid)
        self._need_admin(group, f"{action} participants")
        if action == "add":
            outcomes, changed = self._add(group, phones)
        else:
            outcomes, changed = self._change(group, action, phones)
        self._save(group)
        change = {"add": "added", "remove": "removed"}.get(action, f"{action}d")
        events = [self._event(group, change, self.me, changed)] if changed else []
        return outcomes, events

    def set_name(self, jid: str, name: str) -> list[GroupChanged]:
        group = self._mine(jid)
        if group.locked:
            self._need_admin(group, "rename this locked group")
        group.name = name
        self._save(group)
        return [GroupChanged(self.key, jid, "name", self.me, name=name, timestamp=time.time())]

    def set_topic(self, jid: str, topic: str) -> list[GroupChanged]:
        group = self._mine(jid)
        if group.locked:
            self._need_admin(group, "describe this locked group")
        group.topic = topic
        self._save(group)
        return [GroupChanged(self.key, jid, "topic", self.me, topic=topic, timestamp=time.time())]

    def set_settings(
        self, jid: str, announce: bool | None, locked: bool | None
    ) -> list[GroupChanged]:
        group = self._mine(jid)
        self._need_admin(group, "change the group's settings")
        if announce is not None:
            group.announce = announce
        if locked is not None:
            group.locked = locked
        self._save(group)
        event = GroupChanged(self.key, jid, "settings", self.me, announce=announce, locked=locked)
        return [event]

    def set_photo(self, jid: str) -> str:
        group = self._mine(jid)
        if group.locked:
            self._need_admin(group, "change the picture of this locked group")
        group.photo = str(secrets.randbelow(10**10))
        self._save(group)
        return group.photo

    def join_requests(self, jid: str) -> list[g.JoinRequest]:
        group = self._mine(jid)
        self._need_admin(group, "read the join requests")
        waiting = sorted(group.requests.items(), key=lambda item: item[1])
        return [
            g.JoinRequest(jid=user, lid=lid_of(user), phone=phone_of(user), requested_at=at)
            for user, at in waiting
        ]

    def invite_link(self, jid: str, revoke: bool) -> str:
        group = self._mine(jid)
        self._need_admin(group, "read the invite link")
        if revoke or not group.invite:
            _INVITES.pop(group.invite, None)
            group.invite = secrets.token_urlsafe(16)
            self._save(group)
        _INVITES[group.invite] = group.jid
        _GROUP_STORES[group.jid] = self.store
        return g.INVITE_PREFIX + group.invite

    def preview(self, code: str) -> g.GroupInfo:
        return self._invited(code)[0].info()

    def join(self, code: str) -> tuple[str, list[GroupChanged]]:
        group, store = self._invited(code)
        if self.me not in group.members:
            group.members[self.me] = "member"
            _save(store, group)
            _save(self.store, group)
        return group.jid, [GroupChanged(self.key, group.jid, "joined", self.me, (self.me,))]

    def leave(self, jid: str) -> list[GroupChanged]:
        group = self._mine(jid)
        del group.members[self.me]
        self._save(group)
        return [GroupChanged(self.key, jid, "left", self.me, (self.me,))]

    # -- what another phone does (SimulatorService.ChangeGroup) --------------------------------

    def act(self, args: dict[str, Any]) -> list[GroupChanged]:
        by = user_of(str(args["by_phone"]))
        jid = str(args["group_jid"])
        if args.get("create_name"):
            group = SimGroup(jid, str(args["create_name"]), by, time.time())
            group.members = {by: "super_admin", self.me: "member"}
            self._save(group)
            return [GroupChanged(self.key, jid, "joined", by, (self.me,), name=group.name)]
        found = self._load(jid)
        if found is not None and args.get("request_join") and by not in found.members:
            found.requests.setdefault(by, time.time())
            self._save(found)
            return []
        if found is None or by not in found.members:
            raise GroupNotFound(f"{by} is not in group {jid}")
        group = found
        if args.get("action"):
            action = str(args["action"])
            people = [user_of(p) for p in args.get("phones", [])]
            for person in people:
                if action == "add":
                    group.members.setdefault(person, "member")
                    group.requests.pop(person, None)  # no longer waiting for approval
                elif action == "remove":
                    group.members.pop(person, None)
                else:
                    group.members[person] = "admin" if action == "promote" else "member"
            self._save(group)
            change = {"add": "added", "remove": "removed"}.get(action, f"{action}d")
            events = [self._event(group, change, by, people)]
            if self.me in people and action in ("add", "remove"):
                events.append(
                    GroupChanged(
                        self.key, jid, "joined" if action == "add" else "left", by, (self.me,)
                    )
                )
            return events
        if "name" in args:
            group.name = str(args["name"])
            self._save(group)
            return [GroupChanged(self.key, jid, "name", by, name=group.name)]
        if "topic" in args:
            group.topic = str(args["topic"])
            self._save(group)
            return [GroupChanged(self.key, jid, "topic", by, topic=group.topic)]
        if "ephemeral_seconds" in args:
            seconds = int(str(args["ephemeral_seconds"]))
            return [GroupChanged(self.key, jid, "ephemeral", by, ephemeral_seconds=seconds)]
        announce, locked = args.get("announce"), args.get("locked")
        if announce is not None:
            group.announce = bool(announce)
        if locked is not None:
            group.locked = bool(locked)
        self._save(group)
        return [GroupChanged(self.key, jid, "settings", by, announce=announce, locked=locked)]

    # -- helpers ----------------------------------------------------------------------------

    def _add(
        self, group: SimGroup, phones: list[str]
    ) -> tuple[list[g.ParticipantOutcome], list[str]]:
        outcomes, added = [], []
        for phone in phones:
            jid, digits = user_of(phone), phone.lstrip("+")
            if not self.registered(digits):
                outcomes.append(g.ParticipantOutcome(phone, g.NOT_ON_WHATSAPP))
            elif jid in group.members:
                outcomes.append(g.ParticipantOutcome(phone, g.ALREADY_PARTICIPANT, jid))
            elif self.refuses_adds(digits):
                outcomes.append(g.ParticipantOutcome(phone, g.INVITE_SENT, jid, "403"))
            else:
                group.members[jid] = "member"
                group.requests.pop(jid, None)  # added: no longer waiting for approval
                added.append(jid)
                outcomes.append(g.ParticipantOutcome(phone, g.OK, jid))
        return outcomes, added

    def _change(
        self, group: SimGroup, action: str, phones: list[str]
    ) -> tuple[list[g.ParticipantOutcome], list[str]]:
        outcomes, changed = [], []
        for phone in phones:
            jid = user_of(phone)
            role = group.members.get(jid)
            if role is None:
                outcomes.append(g.ParticipantOutcome(phone, g.NOT_PARTICIPANT, jid))
                continue
            if role == "super_admin" and jid != self.me:
                outcomes.append(g.ParticipantOutcome(phone, g.NOT_ADMIN, jid, "406"))
                continue
            if action == "remove":
                del group.members[jid]
            else:
                group.members[jid] = "admin" if action == "promote" else "member"
            changed.append(jid)
            outcomes.append(g.ParticipantOutcome(phone, g.OK, jid))
        return outcomes, changed

    def _event(self, group: SimGroup, change: str, by: str, people: list[str]) -> GroupChanged:
        return GroupChanged(self.key, group.jid, change, by, tuple(people), timestamp=time.time())

    def _need_admin(self, group: SimGroup, doing: str) -> None:
        if group.members.get(self.me) not in ("admin", "super_admin"):
            raise NotAdmin(f"only admins of {group.jid} may {doing}; this account is not one")

    def _mine(self, jid: str) -> SimGroup:
        group = self._load(jid)
        if group is None or self.me not in group.members:
            raise GroupNotFound(f"this account is not in group {jid}")
        return group

    def _invited(self, code: str) -> tuple[SimGroup, SimStore]:
        for own in self._all():  # a group this account made the link of (and maybe left)
            if own.invite and own.invite == code:
                return own, self.store
        jid = _INVITES.get(code, "")
        store = _GROUP_STORES.get(jid)
        group = _load(store, jid) if store is not None else None
        if store is None or group is None or group.invite != code:
            raise GroupNotFound("the invite link is invalid or was revoked")
        return group, store

    def _all(self) -> list[SimGroup]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT data FROM sim_groups ORDER BY jid").fetchall()
        return [SimGroup(**json.loads(row[0])) for row in rows]

    def _load(self, jid: str) -> SimGroup | None:
        return _load(self.store, jid)

    def _save(self, group: SimGroup) -> None:
        _save(self.store, group)

    def _connect(self) -> sqlite3.Connection:
        return _connect(self.store)


def _connect(store: SimStore) -> sqlite3.Connection:
    db = store.connect()
    db.execute(SCHEMA)
    return db


def _load(store: SimStore, jid: str) -> SimGroup | None:
    with closing(_connect(store)) as db:
        row = db.execute("SELECT data FROM sim_groups WHERE jid = ?", (jid,)).fetchone()
    return None if row is None else SimGroup(**json.loads(row[0]))


def _save(store: SimStore, group: SimGroup) -> None:
    if not g.is_group_jid(group.jid):
        raise EngineError(f"not a group JID: {group.jid!r}")
    with closing(_connect(store)) as db:
        db.execute(
            "INSERT OR REPLACE INTO sim_groups VALUES (?, ?)",
            (group.jid, json.dumps(group.__dict__)),
        )
