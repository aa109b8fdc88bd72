"""MessageService: accept messages into the durable outbox; read, list and cancel them."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from zapgate.gateway.connections.engines import Engines
from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import (
    FieldViolation,
    MediaNotFound,
    MessageNotCancellable,
    MessageNotFound,
)
from zapgate.gateway.rpc.paging import SEQ, decode_page_token, encode_page_token, page_size
from zapgate.gateway.rpc.validation import (
    check_instance_id,
    check_message_id,
    check_phone,
    check_text,
    check_timestamp,
    raise_if_any,
)
from zapgate.gateway.sending.conversation import MAX_MARK_READ_IDS, Conversation
from zapgate.gateway.sending.dispatcher import Dispatcher
from zapgate.gateway.sending.rich_content import check_sticker, link_preview, poll_content
from zapgate.gateway.sending.templates import TemplateError, check
from zapgate.gateway.services.convert import message_to_proto
from zapgate.gateway.store.inbound import InboundRepository
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.gateway.store.messages import MessageRecord, MessageRepository
from zapgate.v1 import message_pb2 as pb
from zapgate.v1 import message_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
MAX_MEDIA_BYTES = 16 * 1024 * 1024  # WhatsApp's own limit for images/video/audio is 16 MB
MAX_TEXT_CHARS = 65_536
JID = re.compile(r"[0-9]{5,20}(:[0-9]+)?@(s\.whatsapp\.net|lid)|[0-9-]{5,40}@g\.us")
MEDIA_KINDS = ("image", "video", "audio", "document", "sticker")
VIEW_ONCE_KINDS = ("image", "video", "voice_note")
DOWNLOAD_CHUNK_BYTES = 256 * 1024


class MessageService(message_pb2_grpc.MessageServiceServicer):
    def __init__(
        self,
        messages: MessageRepository,
        instances: InstanceRepository,
        dispatcher: Dispatcher,
        engines: Engines,
        inbound: InboundRepository,
        conversation: Conversation,
    ) -> None:
        self._conversation = conversation
        self._messages = messages
        self._instances = instances
        self._dispatcher = dispatcher
        self._engines = engines
        self._inbound = inbound

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: Context
    ) -> pb.SendMessageResponse:
        record = to_record(current_tenant(), request)
        await self._dispatcher.require_instance(record.tenant, record.instance_id)
        if request.reply_to:
            record = await self._conversation.quoting(record, request.reply_to)
        stored, created = await self._dispatcher.accept(record)
        return pb.SendMessageResponse(message=self._to_proto(stored), created=created)

    async def DownloadMedia(
        self, request: pb.DownloadMediaRequest, context: Context
    ) -> AsyncIterator[pb.DownloadMediaResponse]:
        raise_if_any(
            check_instance_id("instance_id", request.instance_id)
            + check_message_id("message_id", request.message_id)
        )
        tenant, instance_id = current_tenant(), request.instance_id
        await self._instances.require(tenant, instance_id)
        media = await self._inbound.media(tenant, instance_id, request.message_id)
        if media is None:
            raise MediaNotFound(request.message_id)
        data = await self._engines.download_media(tenant, instance_id, media.media_ref)
        view = memoryview(data)
        for start in range(0, max(len(data), 1), DOWNLOAD_CHUNK_BYTES):
            chunk = pb.DownloadMediaResponse(data=bytes(view[start : start + DOWNLOAD_CHUNK_BYTES]))
            if start == 0:
                chunk.mime_type, chunk.file_name, chunk.size = (
                    media.mime_type,
                    media.file_name,
                    len(data),
                )
            yield chunk

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: Context
    ) -> pb.GetMessageResponse:
        message = await self._require(request.instance_id, request.message_id)
        return pb.GetMessageResponse(message=self._to_proto(message))

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        if request.state not in pb.MessageState.values():
            violations.append(FieldViolation("state", "unknown state"))
        raise_if_any(violations)
        await self._instances.require(current_tenant(), request.instance_id)
        filter_key = f"{request.instance_id}|state={request.state}"
        limit = page_size(request.page_size)
        before = decode_page_token(request.page_token, filter_key, SEQ)
        page = await self._messages.list_page(
            current_tenant(),
            request.instance_id,
            state=request.state or None,
            before_seq=before or 0,
            limit=limit + 1,
        )
        more = len(page) > limit
        page = page[:limit]
        token = encode_page_token(page[-1].seq, filter_key) if more else ""
        return pb.ListMessagesResponse(
            messages=[self._to_proto(m) for m in page], next_page_token=token
        )

    async def CancelMessage(
        self, request: pb.CancelMessageRequest, context: Context
    ) -> pb.CancelMessageResponse:
        message = await self._require(request.instance_id, request.message_id)
        if not await self._dispatcher.cancel(message):
            raise MessageNotCancellable(message.id, pb.MessageState.Name(message.state))  # type: ignore[arg-type]
        cancelled = await self._require(request.instance_id, request.message_id)
        return pb.CancelMessageResponse(message=message_to_proto(cancelled))

    async def React(self, request: pb.ReactRequest, context: Context) -> pb.ReactResponse:
        emoji = request.emoji
        raise_if_any(
            _target_fields(request.instance_id, request.message_id, request.idempotency_key)
            + check_emoji("emoji", emoji)
        )
        stored, created = await self._conversation.react(
            current_tenant(),
            request.instance_id,
            request.message_id,
            emoji,
            request.idempotency_key,
        )
        return pb.ReactResponse(message=self._to_proto(stored), created=created)

    async def EditMessage(
        self, request: pb.EditMessageRequest, context: Context
    ) -> pb.EditMessageResponse:
        violations = _target_fields(
            request.instance_id, request.message_id, request.idempotency_key
        )
        if not request.text.strip():
            violations.append(FieldViolation("text", "required"))
        violations += check_text("text", request.text, MAX_TEXT_CHARS)
        raise_if_any(violations)
        stored, created = await self._conversation.edit(
            current_tenant(),
            request.instance_id,
            request.message_id,
            request.text,
            request.idempotency_key,
        )
        return pb.EditMessageResponse(message=self._to_proto(stored), created=created)

    async def RevokeMessage(
        self, request: pb.RevokeMessageRequest, context: Context
    ) -> pb.RevokeMessageResponse:
        raise_if_any(
            _target_fields(request.instance_id, request.message_id, request.idempotency_key)
        )
        stored, created = await self._conversation.revoke(
            current_tenant(), request.instance_id, request.message_id, request.idempotency_key
        )
        return pb.RevokeMessageResponse(message=self._to_proto(stored), created=created)

    async def MarkRead(self, request: pb.MarkReadRequest, context: Context) -> pb.MarkReadResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        ids = list(request.message_ids)
        if bool(ids) == bool(request.up_to_message_id):
            violations.append(FieldViolation("message_ids", "give message_ids or up_to_message_id"))
        if len(ids) > MAX_MARK_READ_IDS:
            violations.append(FieldViolation("message_ids", f"at most {MAX_MARK_READ_IDS}"))
        for n, message_id in enumerate(ids[:MAX_MARK_READ_IDS]):
            violations += check_message_id(f"message_ids[{n}]", message_id)
        if request.up_to_message_id:
            violations += check_message_id("up_to_message_id", request.up_to_message_id)
        raise_if_any(violations)
        chat, marked = await self._conversation.mark_read(
            current_tenant(), request.instance_id, ids, request.up_to_message_id
        )
        return pb.MarkReadResponse(chat_jid=chat, marked=marked)

    async def SendChatPresence(
        self, request: pb.SendChatPresenceRequest, context: Context
    ) -> pb.SendChatPresenceResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        chat = _recipient(request, violations)
        presence = PRESENCES.get(request.presence)
        if presence is None:
            violations.append(FieldViolation("presence", "give COMPOSING, RECORDING or PAUSED"))
        raise_if_any(violations)
        assert presence is not None
        await self._conversation.presence(current_tenant(), request.instance_id, chat, presence)
        return pb.SendChatPresenceResponse()

    async def SetPresence(
        self, request: pb.SetPresenceRequest, context: Context
    ) -> pb.SetPresenceResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        if request.presence not in (pb.PRESENCE_AVAILABLE, pb.PRESENCE_UNAVAILABLE):
            violations.append(FieldViolation("presence", "give AVAILABLE or UNAVAILABLE"))
        raise_if_any(violations)
        available = request.presence == pb.PRESENCE_AVAILABLE
        await self._conversation.set_presence(current_tenant(), request.instance_id, available)
        return pb.SetPresenceResponse()

    async def SubscribePresence(
        self, request: pb.SubscribePresenceRequest, context: Context
    ) -> pb.SubscribePresenceResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        contact = _recipient(request, violations)
        if contact.endswith("@g.us"):
            violations.append(FieldViolation("jid", "a person's JID, not a group's"))
        raise_if_any(violations)
        await self._conversation.subscribe_presence(current_tenant(), request.instance_id, contact)
        return pb.SubscribePresenceResponse()

    def _to_proto(self, record: MessageRecord) -> pb.Message:
        """With why a QUEUED message waits and its next chance, from the scheduler."""
        waiting = None
        if record.state == pb.MESSAGE_STATE_QUEUED:
            waiting = self._dispatcher.scheduler.waiting(record.instance_key, record.id)
        return message_to_proto(record, waiting)

    async def _require(self, instance_id: str, message_id: str) -> MessageRecord:
        raise_if_any(
            check_instance_id("instance_id", instance_id)
            + check_message_id("message_id", message_id)
        )
        message = await self._messages.get(current_tenant(), instance_id, message_id)
        if message is None:
            raise MessageNotFound(message_id)
        return message


PRESENCES = {
    pb.CHAT_PRESENCE_COMPOSING: "composing",
    pb.CHAT_PRESENCE_RECORDING: "recording",
    pb.CHAT_PRESENCE_PAUSED: "paused",
}
MAX_MENTIONS = 256
MAX_EMOJI_CHARS = 16
MENTIONABLE = ("text", "image", "video", "document")


def _target_fields(instance_id: str, message_id: str, idempotency_key: str) -> list[FieldViolation]:
    return (
        check_instance_id("instance_id", instance_id)
        + check_message_id("message_id", message_id)
        + check_text("idempotency_key", idempotency_key, 200)
    )


def check_emoji(field: str, emoji: str) -> list[FieldViolation]:
    """Empty (removes the reaction), or one emoji: a few code points (modifiers, joiners),
    no letters, digits, spaces or control characters."""
    if not emoji:
        return []
    plain = any(c.isascii() and (c.isalnum() or c.isspace()) for c in emoji)
    if len(emoji) > MAX_EMOJI_CHARS or plain or "\x00" in emoji or emoji.isspace():
        return [FieldViolation(field, "must be one emoji (e.g. 👍), or empty to remove")]
    return []


def to_record(tenant: str, request: pb.SendMessageRequest) -> MessageRecord:
    """Validates every field at once; raises InvalidArgument naming each bad one."""
    violations = check_instance_id("instance_id", request.instance_id)
    recipient = _recipient(request, violations)
    kind, content, media = _content(request, violations)
    content = {**content, **_conversation(request, kind, content, violations)}
    if request.view_once:
        if kind not in VIEW_ONCE_KINDS:
            violations.append(
                FieldViolation("view_once", "only an image, a video or a voice note can be")
            )
        content["view_once"] = True
    if request.HasField("link_preview"):
        content = {**content, **link_preview(request, kind, violations)}
        media = bytes(request.link_preview.thumbnail) or None  # a text has no other media
    send_at = _micros("send_at", request, violations) or 0
    expire = _micros("expire_time", request, violations)
    if expire is not None and send_at and expire <= send_at:
        violations.append(FieldViolation("expire_time", "must be after send_at"))
    violations += check_text("idempotency_key", request.idempotency_key, 200)
    if not -1000 <= request.priority <= 1000:
        violations.append(FieldViolation("priority", "must be between -1000 and 1000"))
    raise_if_any(violations)
    return MessageRecord(
        tenant=tenant,
        instance_id=request.instance_id,
        recipient_jid=recipient,
        kind=kind,
        content=content,
        media=media,
        priority=request.priority,
        idempotency_key=request.idempotency_key or None,
        send_at_us=send_at,
        expire_us=expire,
    )


def _conversation(
    request: pb.SendMessageRequest,
    kind: str,
    content: dict[str, Any],
    violations: list[FieldViolation],
) -> dict[str, Any]:
    """The reply_to and mentions of a message, validated (the quoted message is looked up
    later, within the instance)."""
    extra: dict[str, Any] = {}
    if request.reply_to:
        violations += check_message_id("reply_to", request.reply_to)
        extra["reply_to"] = request.reply_to
    phones = list(request.mentions)
    if not phones:
        return extra
    if kind not in MENTIONABLE:
        violations.append(FieldViolation("mentions", "only a text or a caption can mention"))
        return extra
    if len(phones) > MAX_MENTIONS:
        violations.append(FieldViolation("mentions", f"at most {MAX_MENTIONS}"))
        return extra
    body = str(content.get("text") or content.get("caption") or "")
    for n, phone in enumerate(phones):
        found = check_phone(f"mentions[{n}]", phone) or (
            [] if phone else [FieldViolation(f"mentions[{n}]", "required")]
        )
        if not found and f"@{phone[1:]}" not in body:
            found = [FieldViolation(f"mentions[{n}]", f"the text must contain @{phone[1:]}")]
        violations += found
    extra["mention_phones"] = phones
    extra["mentions"] = [f"{phone[1:]}@s.whatsapp.net" for phone in phones]
    return extra


def _micros(
    field: str, request: pb.SendMessageRequest, violations: list[FieldViolation]
) -> int | None:
    """A set Timestamp field in microseconds; None when unset or out of range (named)."""
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    value = getattr(request, field)
    found = check_timestamp(field, value)
    violations += found
    return None if found else int(value.ToMicroseconds())


def _recipient(
    request: pb.SendMessageRequest | pb.SendChatPresenceRequest | pb.SubscribePresenceRequest,
    violations: list[FieldViolation],
) -> str:
    if isinstance(request, pb.SendChatPresenceRequest):
        which = request.WhichOneof("chat")
    elif isinstance(request, pb.SubscribePresenceRequest):
        which = request.WhichOneof("contact")
    else:
        which = request.WhichOneof("recipient")
    if which == "phone":
        found = (
            check_phone("phone", request.phone)
            if request.phone
            else [FieldViolation("phone", "required")]
        )
        violations += found
        return f"{request.phone.lstrip('+')}@s.whatsapp.net"
    if which == "jid":
        if not JID.fullmatch(request.jid):
            violations.append(
                FieldViolation("jid", "must be a WhatsApp JID such as 5511999998888@s.whatsapp.net")
            )
        return request.jid
    violations.append(FieldViolation("recipient", "give phone or jid"))
    return ""


def _content(
    request: pb.SendMessageRequest, violations: list[FieldViolation]
) -> tuple[str, dict[str, Any], bytes | None]:
    which = request.WhichOneof("content")
    variables = dict(request.variables)
    if which == "text":
        _check_template("text.body", request.text.body, variables, violations, required=True)
        return "text", {"text": request.text.body, "variables": variables}, None
    if which in MEDIA_KINDS:
        media = getattr(request, which)
        field = f"{which}.data"
        if not media.data:
            violations.append(FieldViolation(field, "required"))
        elif len(media.data) > MAX_MEDIA_BYTES:
            violations.append(FieldViolation(field, f"at most {MAX_MEDIA_BYTES} bytes"))
        if not media.mime_type or "/" not in media.mime_type:
            violations.append(FieldViolation(f"{which}.mime_type", "required, e.g. image/jpeg"))
        caption = getattr(media, "caption", "")
        _check_template(f"{which}.caption", caption, variables, violations, required=False)
        if which == "sticker":
            check_sticker(request.sticker, violations)
        kind = "voice_note" if which == "audio" and request.audio.voice_note else which
        content = {
            "caption": caption,
            "variables": variables,
            "mime_type": media.mime_type,
            "file_name": getattr(media, "file_name", ""),
            "voice_note": kind == "voice_note",
        }
        return kind, content, bytes(media.data)
    if which == "location":
        location = request.location
        if not (math.isfinite(location.latitude) and -90 <= location.latitude <= 90):
            violations.append(FieldViolation("location.latitude", "must be within -90..90"))
        if not (math.isfinite(location.longitude) and -180 <= location.longitude <= 180):
            violations.append(FieldViolation("location.longitude", "must be within -180..180"))
        return (
            "location",
            {
                "latitude": location.latitude,
                "longitude": location.longitude,
                "location_name": location.name,
                "location_address": location.address,
            },
            None,
        )
    if which == "contact":
        card = request.contact
        if not card.display_name:
            violations.append(FieldViolation("contact.display_name", "required"))
        if not card.vcard:
            violations += (
                check_phone("contact.phone", card.phone)
                if card.phone
                else [FieldViolation("contact.phone", "give phone or vcard")]
            )
        vcard = card.vcard or vcard_for(card.display_name, card.phone)
        return "contact", {"contact_name": card.display_name, "contact_vcard": vcard}, None
    if which == "poll":
        return "poll", poll_content(request.poll, violations), None
    violations.append(
        FieldViolation(
            "content",
            "give one of text, image, video, audio, document, location, contact, poll, sticker",
        )
    )
    return "text", {}, None


def _check_template(
    field: str,
    template: str,
    variables: dict[str, str],
    violations: list[FieldViolation],
    *,
    required: bool,
) -> None:
    if required and not template.strip():
        violations.append(FieldViolation(field, "required"))
    elif len(template) > MAX_TEXT_CHARS:
        violations.append(FieldViolation(field, f"at most {MAX_TEXT_CHARS} characters"))
    else:
        try:
            check(template, variables)
        except TemplateError as error:
            violations.append(FieldViolation(field, str(error)))


def vcard_for(name: str, phone: str) -> str:
    # Escaped: a newline in a caller's name would otherwise start a vCard field of its own.
    digits = "".join(c for c in phone if c.isdigit())  # a parameter value has no escapes
    return (
        f"BEGIN:VCARD\nVERSION:3.0\nFN:{vcard_text(name)}\n"
        f"TEL;type=CELL;waid={digits}:{vcard_text(phone)}\nEND:VCARD"
    )


def vcard_text(value: str) -> str:
    """A vCard text value, escaped as RFC 6350 (3.4) says: backslash, comma, semicolon and
    line breaks."""
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
    return value.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
