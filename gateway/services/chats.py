"""ChatService: the instance's conversations from the per-chat store (store/chats.py)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import grpc.aio
from google.protobuf import json_format

from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import ChatNotFound, FieldViolation, MessageNotFound
from zapgate.gateway.rpc.paging import (
    CHAT_KEY,
    CHAT_MESSAGE_KEY,
    MAX_INT64,
    decode_page_token,
    encode_page_token,
    page_size,
)
from zapgate.gateway.rpc.validation import (
    check_instance_id,
    check_message_id,
    check_text,
    check_timestamp,
    raise_if_any,
)
from zapgate.gateway.sending.conversation import Conversation
from zapgate.gateway.services.convert import timestamp
from zapgate.gateway.store.chat_reads import ChatStore, StoredChat, StoredMessage
from zapgate.gateway.store.chat_settings import ChatSettings, ChatSettingsRepository
from zapgate.gateway.store.chats import OWN_REACTION
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.v1 import chat_pb2 as pb
from zapgate.v1 import chat_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
# A person (phone number or LID) or a group.
CHAT_JID = re.compile(r"[0-9]{1,30}(-[0-9]{5,20})?@(s\.whatsapp\.net|lid|g\.us)")
MAX_QUERY_CHARS = 100
EXPORT_PAGE = 500  # messages per streamed piece
NEWER = pb.PAGE_DIRECTION_NEWER


def check_chat_jid(field: str, value: str) -> list[FieldViolation]:
    if not CHAT_JID.fullmatch(value):
        return [FieldViolation(field, "a chat JID: digits@s.whatsapp.net, digits@lid or a group")]
    return []


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(
        self,
        chats: ChatStore,
        instances: InstanceRepository,
        inbound: InboundRepository,
        conversation: Conversation,
        settings: ChatSettingsRepository,
    ) -> None:
        self._chats = chats
        self._settings = settings
        self._instances = instances
        self._inbound = inbound
        self._conversation = conversation

    async def ListChats(
        self, request: pb.ListChatsRequest, context: Context
    ) -> pb.ListChatsResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        limit = page_size(request.page_size)
        after = decode_page_token(request.page_token, request.instance_id, CHAT_KEY)
        tenant = current_tenant()
        await self._instances.require(tenant, request.instance_id)
        page = await self._chats.chats_page(
            tenant, request.instance_id, after=after, limit=limit + 1
        )
        token = ""
        if len(page) > limit:
            page = page[:limit]
            token = encode_page_token([page[-1].last_us, page[-1].last_seq], request.instance_id)
        return pb.ListChatsResponse(chats=[_chat(c) for c in page], next_page_token=token)

    async def GetChat(self, request: pb.GetChatRequest, context: Context) -> pb.GetChatResponse:
        chat = await self._require_chat(request.instance_id, request.chat_jid)
        return pb.GetChatResponse(chat=_chat(chat))

    async def ListChatMessages(
        self, request: pb.ListChatMessagesRequest, context: Context
    ) -> pb.ListChatMessagesResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        violations += check_chat_jid("chat_jid", request.chat_jid)
        start = request.WhichOneof("start")
        if start == "start_message_id":
            violations += check_message_id("start_message_id", request.start_message_id)
        elif start == "start_time":
            violations += check_timestamp("start_time", request.start_time)
        if request.direction not in pb.PageDirection.values():
            violations.append(FieldViolation("direction", "OLDER or NEWER"))
        raise_if_any(violations)
        newer = request.direction == NEWER
        limit = page_size(request.page_size)
        filter_key = json.dumps(
            [request.instance_id, request.chat_jid, newer, start or "", _start_value(request)]
        )
        after = decode_page_token(request.page_token, filter_key, CHAT_MESSAGE_KEY)
        tenant = current_tenant()
        await self._require_chat(request.instance_id, request.chat_jid)
        if after is None:
            after = await self._start(tenant, request, newer)
        page = await self._chats.messages_page(
            tenant, request.instance_id, request.chat_jid, after=after, newer=newer, limit=limit + 1
        )
        return pb.ListChatMessagesResponse(**_messages_page(page, limit, filter_key))

    async def _start(
        self, tenant: str, request: pb.ListChatMessagesRequest, newer: bool
    ) -> tuple[int, int]:
        """The keyset position the first page starts past."""
        start = request.WhichOneof("start")
        if start == "start_message_id":
            message = await self._chats.message(
                tenant, request.instance_id, request.start_message_id
            )
            if message is None or message.chat_jid != request.chat_jid:
                raise MessageNotFound(request.start_message_id)
            return message.sent_us, message.seq
        if start == "start_time":
            at = max(0, request.start_time.ToMicroseconds())
            # NEWER: from `at` on (every seq is above 0); OLDER: up to `at` (below MAX).
            return (at, 0) if newer else (at, MAX_INT64)
        return (-1, 0) if newer else (MAX_INT64, MAX_INT64)

    async def GetChatMessage(
        self, request: pb.GetChatMessageRequest, context: Context
    ) -> pb.GetChatMessageResponse:
        raise_if_any(
            check_instance_id("instance_id", request.instance_id)
            + check_message_id("message_id", request.message_id)
        )
        tenant = current_tenant()
        await self._instances.require(tenant, request.instance_id)
        message = await self._chats.message(tenant, request.instance_id, request.message_id)
        if message is None:
            raise MessageNotFound(request.message_id)
        return pb.GetChatMessageResponse(message=_message(message))

    async def SearchMessages(
        self, request: pb.SearchMessagesRequest, context: Context
    ) -> pb.SearchMessagesResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        if not request.query.strip():
            violations.append(FieldViolation("query", "required"))
        violations += check_text("query", request.query, MAX_QUERY_CHARS)
        if request.chat_jid:
            violations += check_chat_jid("chat_jid", request.chat_jid)
        raise_if_any(violations)
        limit = page_size(request.page_size)
        filter_key = json.dumps([request.instance_id, request.query, request.chat_jid])
        after = decode_page_token(request.page_token, filter_key, CHAT_MESSAGE_KEY)
        tenant = current_tenant()
        await self._instances.require(tenant, request.instance_id)
        page = await self._chats.search(
            tenant,
            request.instance_id,
            request.query,
            chat_jid=request.chat_jid,
            after=after,
            limit=limit + 1,
        )
        return pb.SearchMessagesResponse(**_messages_page(page, limit, filter_key))

    async def MarkChatRead(
        self, request: pb.MarkChatReadRequest, context: Context
    ) -> pb.MarkChatReadResponse:
        chat = await self._require_chat(request.instance_id, request.chat_jid)
        tenant = current_tenant()
        newest = await self._chats.newest_unread(tenant, request.instance_id, chat.jid)
        marked = 0
        # Receipts go out through MarkRead's path for what it knows (messages received
        # live); imported history has nothing WhatsApp still waits a receipt for.
        if newest and await self._inbound.received(tenant, request.instance_id, newest):
            _, marked = await self._conversation.mark_read(tenant, request.instance_id, [], newest)
        await self._chats.clear_unread(tenant, request.instance_id, chat.jid)
        return pb.MarkChatReadResponse(marked=marked)

    async def ExportChat(
        self, request: pb.ExportChatRequest, context: Context
    ) -> AsyncIterator[pb.ExportChatResponse]:
        chat = await self._require_chat(request.instance_id, request.chat_jid)
        tenant = current_tenant()
        after = (-1, 0)
        while page := await self._chats.messages_page(
            tenant, request.instance_id, chat.jid, after=after, newer=True, limit=EXPORT_PAGE
        ):
            yield pb.ExportChatResponse(data=b"".join(json_line(m) for m in page))
            after = (page[-1].sent_us, page[-1].seq)

    async def GetChatSettings(
        self, request: pb.GetChatSettingsRequest, context: Context
    ) -> pb.GetChatSettingsResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        tenant = current_tenant()
        await self._instances.require(tenant, request.instance_id)
        settings = await self._settings.get(tenant, request.instance_id)
        return pb.GetChatSettingsResponse(settings=pb.ChatSettings(**asdict(settings)))

    async def UpdateChatSettings(
        self, request: pb.UpdateChatSettingsRequest, context: Context
    ) -> pb.UpdateChatSettingsResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        given = request.settings
        for name in ("history_days", "history_messages_per_chat", "retention_days"):
            if getattr(given, name) < 0:
                violations.append(FieldViolation(f"settings.{name}", "0 (no limit) or more"))
        raise_if_any(violations)
        tenant = current_tenant()
        await self._instances.require(tenant, request.instance_id)
        settings = ChatSettings(
            history_days=given.history_days,
            history_messages_per_chat=given.history_messages_per_chat,
            retention_days=given.retention_days,
        )
        await self._settings.put(tenant, request.instance_id, settings)
        return pb.UpdateChatSettingsResponse(settings=pb.ChatSettings(**asdict(settings)))

    async def _require_chat(self, instance_id: str, chat_jid: str) -> StoredChat:
        raise_if_any(
            check_instance_id("instance_id", instance_id) + check_chat_jid("chat_jid", chat_jid)
        )
        tenant = current_tenant()
        await self._instances.require(tenant, instance_id)
        chat = await self._chats.chat(tenant, instance_id, chat_jid)
        if chat is None:
            raise ChatNotFound(chat_jid)
        return chat


def json_line(message: StoredMessage) -> bytes:
    data = json_format.MessageToDict(_message(message))
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _start_value(request: pb.ListChatMessagesRequest) -> object:
    start = request.WhichOneof("start")
    if start == "start_message_id":
        return request.start_message_id
    if start == "start_time":
        return [request.start_time.seconds, request.start_time.nanos]
    return None


def _messages_page(page: list[StoredMessage], limit: int, filter_key: str) -> dict[str, Any]:
    token = ""
    if len(page) > limit:
        page = page[:limit]
        token = encode_page_token([page[-1].sent_us, page[-1].seq], filter_key)
    return {"messages": [_message(m) for m in page], "next_page_token": token}


def _chat(chat: StoredChat) -> pb.Chat:
    return pb.Chat(
        jid=chat.jid,
        name=chat.name,
        last_message_time=timestamp(chat.last_us),
        last_message_id=chat.last_message_id,
        last_message_preview=chat.last_preview,
        last_message_from_me=chat.last_from_me,
        unread_count=chat.unread,
        muted_until=timestamp(chat.muted_until_us) if chat.muted_until_us else None,
        archived=chat.archived,
        pinned=chat.pinned,
    )


def _message(message: StoredMessage) -> pb.ChatMessage:
    return pb.ChatMessage(
        message_id=message.message_id,
        chat_jid=message.chat_jid,
        sender_jid=message.sender_jid,
        push_name=message.push_name,
        from_me=message.from_me,
        kind=message.kind,
        text=message.text,
        media_mime_type=message.media_mime_type,
        media_file_name=message.media_file_name,
        sent_time=timestamp(message.sent_us),
        outbox_message_id=message.outbox_id,
        state=message.state,  # type: ignore[arg-type]
        read_time=timestamp(message.read_us) if message.read_us else None,
        revoke_time=timestamp(message.revoked_us) if message.revoked_us else None,
        edits=[
            pb.ChatMessageEdit(previous_text=e.text, edit_time=timestamp(e.time_us))
            for e in message.edits
        ],
        reactions=[
            pb.ChatReaction(
                sender_jid="" if who == OWN_REACTION else who,
                from_me=who == OWN_REACTION,
                emoji=emoji,
            )
            for who, emoji in sorted(message.reactions.items())
        ],
        from_history=message.from_history,
    )
