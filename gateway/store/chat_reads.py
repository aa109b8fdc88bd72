"""Reads of the per-chat store (store/chats.py writes it): chats newest first, a chat's
messages paged either way, one message, text search; and MarkChatRead's write, which is no
message's. Page statements are built once with bound parameters and rows come back as
tuples: a page then costs about what its query costs (bench/chats.py)."""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.store.contacts import fold
from zapgate.gateway.store.schema import chat_messages, chats


class StoredChat(NamedTuple):
    """A chat row, in `_CHAT`'s column order (a tuple: a page converts in no time)."""

    jid: str
    name: str
    last_us: int
    last_seq: int
    last_message_id: str
    last_preview: str
    last_from_me: bool
    unread: int
    muted_until_us: int
    archived: bool
    pinned: bool


class Edit(NamedTuple):
    text: str  # the text before the edit
    time_us: int


class StoredMessage(NamedTuple):
    """A message row, in `_MESSAGE`'s column order."""

    seq: int
    chat_jid: str
    message_id: str
    outbox_id: str
    sender_jid: str
    push_name: str
    from_me: bool
    kind: str
    text: str
    media_mime_type: str
    media_file_name: str
    sent_us: int
    state: int
    read_us: int
    revoked_us: int
    from_history: bool
    edits: tuple[Edit, ...] = ()
    reactions: dict[str, str] = {}  # noqa: RUF012 (never mutated: a fresh dict per row)


class ChatStore:
    """Reads of the per-chat store, and the writes that are no message's (MarkChatRead)."""

    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock

    async def chat(self, tenant: str, instance_id: str, jid: str) -> StoredChat | None:
        query = sa.select(*_CHAT).where(
            chats.c.tenant == tenant, chats.c.instance_id == instance_id, chats.c.jid == jid
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else StoredChat._make(row)

    async def chats_page(
        self, tenant: str, instance_id: str, *, after: tuple[int, int] | None, limit: int
    ) -> list[StoredChat]:
        """Newest activity first, after the keyset position (last_us, last_seq)."""
        at, seq = after if after is not None else (_MAX, _MAX)
        values = {"tenant": tenant, "instance_id": instance_id, "at": at, "seq": seq}
        async with self._engine.connect() as conn:
            rows = await conn.execute(_CHATS_PAGE, {**values, "limit": limit})
            return [StoredChat._make(row) for row in rows]

    async def messages_page(
        self,
        tenant: str,
        instance_id: str,
        chat_jid: str,
        *,
        after: tuple[int, int],
        newer: bool,
        limit: int,
    ) -> list[StoredMessage]:
        """A chat's messages strictly past the position (sent_us, seq): newer ones oldest
        first, or older ones newest first."""
        values = {
            "tenant": tenant,
            "instance_id": instance_id,
            "chat_jid": chat_jid,
            "at": after[0],
            "seq": after[1],
            "limit": limit,
        }
        async with self._engine.connect() as conn:
            rows = await conn.execute(_NEWER_PAGE if newer else _OLDER_PAGE, values)
            return [_message(row) for row in rows]

    async def message(self, tenant: str, instance_id: str, message_id: str) -> StoredMessage | None:
        query = sa.select(*_MESSAGE).where(
            chat_messages.c.tenant == tenant,
            chat_messages.c.instance_id == instance_id,
            chat_messages.c.message_id == message_id,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _message(row)

    async def search(
        self,
        tenant: str,
        instance_id: str,
        text: str,
        *,
        chat_jid: str,
        after: tuple[int, int] | None,
        limit: int,
    ) -> list[StoredMessage]:
        """Messages whose text contains `text` (case and accents ignored), newest first."""
        pattern = "%" + fold(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions = [
            chat_messages.c.tenant == tenant,
            chat_messages.c.instance_id == instance_id,
            chat_messages.c.search_text.like(pattern + "%", escape="\\"),
        ]
        if chat_jid:
            conditions.append(chat_messages.c.chat_jid == chat_jid)
        if after is not None:
            conditions.append(sa.tuple_(chat_messages.c.sent_us, chat_messages.c.seq) < after)
        query = (
            sa.select(*_MESSAGE)
            .where(*conditions)
            .order_by(chat_messages.c.sent_us.desc(), chat_messages.c.seq.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_message(row) for row in await conn.execute(query)]

    async def newest_unread(self, tenant: str, instance_id: str, chat_jid: str) -> str:
        """The WhatsApp id of the chat's newest message others wrote and the instance has
        not marked read ('' if none)."""
        query = (
            sa.select(chat_messages.c.message_id)
            .where(
                chat_messages.c.tenant == tenant,
                chat_messages.c.instance_id == instance_id,
                chat_messages.c.chat_jid == chat_jid,
                chat_messages.c.from_me == sa.false(),
                chat_messages.c.read_us == 0,
            )
            .order_by(chat_messages.c.sent_us.desc(), chat_messages.c.seq.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            return str(await conn.scalar(query) or "")

    async def clear_unread(self, tenant: str, instance_id: str, chat_jid: str) -> None:
        """The whole chat read: its count to 0, every message in it marked."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(chat_messages)
                .where(
                    chat_messages.c.tenant == tenant,
                    chat_messages.c.instance_id == instance_id,
                    chat_messages.c.chat_jid == chat_jid,
                    chat_messages.c.from_me == sa.false(),
                    chat_messages.c.read_us == 0,
                )
                .values(read_us=self._clock())
            )
            await conn.execute(
                sa.update(chats)
                .where(
                    chats.c.tenant == tenant,
                    chats.c.instance_id == instance_id,
                    chats.c.jid == chat_jid,
                )
                .values(unread=0)
            )


_CHAT = [
    chats.c.jid,
    chats.c.name,
    chats.c.last_us,
    chats.c.last_seq,
    chats.c.last_message_id,
    chats.c.last_preview,
    chats.c.last_from_me,
    chats.c.unread,
    chats.c.muted_until_us,
    chats.c.archived,
    chats.c.pinned,
]

_MESSAGE = [
    chat_messages.c.seq,
    chat_messages.c.chat_jid,
    chat_messages.c.message_id,
    chat_messages.c.outbox_id,
    chat_messages.c.sender_jid,
    chat_messages.c.push_name,
    chat_messages.c.from_me,
    chat_messages.c.kind,
    chat_messages.c.text,
    chat_messages.c.media_mime_type,
    chat_messages.c.media_file_name,
    chat_messages.c.sent_us,
    chat_messages.c.state,
    chat_messages.c.read_us,
    chat_messages.c.revoked_us,
    chat_messages.c.from_history,
    chat_messages.c.edits,
    chat_messages.c.reactions,
]


def _message(row: sa.Row[Any]) -> StoredMessage:
    values: tuple[Any, ...] = tuple(row)
    edits, reactions = values[-2], values[-1]
    if edits is None and reactions is None:
        return StoredMessage._make((*values[:-2], (), {}))
    return StoredMessage._make(
        (
            *values[:-2],
            tuple(Edit(e["text"], e["time_us"]) for e in edits or ()),
            dict(reactions or {}),
        )
    )


_MAX = 2**63 - 1
_KEY = sa.tuple_(chat_messages.c.sent_us, chat_messages.c.seq)
_AFTER = sa.tuple_(sa.bindparam("at"), sa.bindparam("seq"))
# Built once: a page's statement costs more to build than to run.
_CHATS_PAGE = (
    sa.select(*_CHAT)
    .where(
        chats.c.tenant == sa.bindparam("tenant"),
        chats.c.instance_id == sa.bindparam("instance_id"),
        sa.tuple_(chats.c.last_us, chats.c.last_seq) < _AFTER,
    )
    .order_by(chats.c.last_us.desc(), chats.c.last_seq.desc())
    .limit(sa.bindparam("limit"))
)
_IN_CHAT = (
    chat_messages.c.tenant == sa.bindparam("tenant"),
    chat_messages.c.instance_id == sa.bindparam("instance_id"),
    chat_messages.c.chat_jid == sa.bindparam("chat_jid"),
)
_OLDER_PAGE = (
    sa.select(*_MESSAGE)
    .where(*_IN_CHAT, _KEY < _AFTER)
    .order_by(chat_messages.c.sent_us.desc(), chat_messages.c.seq.desc())
    .limit(sa.bindparam("limit"))
)
_NEWER_PAGE = (
    sa.select(*_MESSAGE)
    .where(*_IN_CHAT, _KEY > _AFTER)
    .order_by(chat_messages.c.sent_us, chat_messages.c.seq)
    .limit(sa.bindparam("limit"))
)
