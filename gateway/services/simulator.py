"""SimulatorService: drives the phone side of the simulator engine. Only served with
`--engine sim`; on a real engine every call is UNIMPLEMENTED with a clear message."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import grpc.aio

from zapgate.engine.v1 import worker_pb2 as wpb
from zapgate.gateway.connections.engines import Engines
from zapgate.gateway.events.inbox import Inbox
from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import EngineUnavailable, FieldViolation, SimulatorDisabled
from zapgate.gateway.rpc.validation import (
    check_instance_id,
    check_phone,
    check_text,
    raise_if_any,
)
from zapgate.gateway.sending.rich_content import poll_content
from zapgate.gateway.services import sim_history
from zapgate.gateway.services.convert import timestamp
from zapgate.gateway.services.messages import vcard_for
from zapgate.gateway.services.sim_events import (
    call_event,
    caller_violations,
    presence_event,
    presence_violations,
    read_on_phone_event,
    read_on_phone_violations,
)
from zapgate.sessions import wire
from zapgate.sessions.engine import Contact
from zapgate.sessions.events import EngineEvent, MessageReceived, poll_option_sha256
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import simulator_pb2 as pb
from zapgate.v1 import simulator_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_BAN_CODE = 101
# How long InjectIncomingMessage waits for the message's event to be committed.
INJECT_COMMIT_TIMEOUT = 30.0
RECEIPT_KINDS = {
    pb.RECEIPT_KIND_DELIVERED: "delivered",
    pb.RECEIPT_KIND_READ: "read",
    pb.RECEIPT_KIND_PLAYED: "played",
}
MEDIA_KINDS = {
    epb.MEDIA_KIND_IMAGE: "image",
    epb.MEDIA_KIND_VIDEO: "video",
    epb.MEDIA_KIND_AUDIO: "audio",
    epb.MEDIA_KIND_VOICE_NOTE: "voice_note",
    epb.MEDIA_KIND_DOCUMENT: "document",
    epb.MEDIA_KIND_STICKER: "sticker",
}


class SimulatorService(simulator_pb2_grpc.SimulatorServiceServicer):
    def __init__(self, engines: Engines, inbox: Inbox, enabled: bool) -> None:
        self._engines = engines
        self._inbox = inbox
        self._enabled = enabled

    def _check(self, instance_id: str, violations: list[FieldViolation] | None = None) -> None:
        if not self._enabled:
            raise SimulatorDisabled()
        raise_if_any(check_instance_id("instance_id", instance_id) + (violations or []))

    async def _run(self, instance_id: str, action: wpb.SimulateRequest) -> None:
        await self._engines.simulate(current_tenant(), instance_id, action)

    async def ScanQr(self, request: pb.ScanQrRequest, context: Context) -> pb.ScanQrResponse:
        violations = check_phone("phone", request.phone)
        if not request.phone:
            violations.append(FieldViolation("phone", "required: the simulated phone's number"))
        if not request.code:
            violations.append(FieldViolation("code", "required: the QR code string shown"))
        self._check(request.instance_id, violations)
        scan = wpb.SimulateRequest.ScanQr(code=request.code, phone=request.phone)
        await self._run(request.instance_id, wpb.SimulateRequest(scan_qr=scan))
        return pb.ScanQrResponse()

    async def EnterPairCode(
        self, request: pb.EnterPairCodeRequest, context: Context
    ) -> pb.EnterPairCodeResponse:
        missing = [] if request.code else [FieldViolation("code", "required: the pair code")]
        self._check(request.instance_id, missing)
        entry = wpb.SimulateRequest.EnterPairCode(code=request.code)
        await self._run(request.instance_id, wpb.SimulateRequest(enter_pair_code=entry))
        return pb.EnterPairCodeResponse()

    async def DropConnection(
        self, request: pb.DropConnectionRequest, context: Context
    ) -> pb.DropConnectionResponse:
        self._check(request.instance_id)
        drop = wpb.SimulateRequest.DropConnection()
        await self._run(request.instance_id, wpb.SimulateRequest(drop_connection=drop))
        return pb.DropConnectionResponse()

    async def LogoutFromPhone(
        self, request: pb.LogoutFromPhoneRequest, context: Context
    ) -> pb.LogoutFromPhoneResponse:
        self._check(request.instance_id)
        logout = wpb.SimulateRequest.LogoutFromPhone()
        await self._run(request.instance_id, wpb.SimulateRequest(logout_from_phone=logout))
        return pb.LogoutFromPhoneResponse()

    async def TemporaryBan(
        self, request: pb.TemporaryBanRequest, context: Context
    ) -> pb.TemporaryBanResponse:
        bad = request.expires_in_seconds <= 0
        self._check(
            request.instance_id, [FieldViolation("expires_in_seconds", "must be positive")] * bad
        )
        ban = wpb.SimulateRequest.TemporaryBan(
            code=request.code or DEFAULT_BAN_CODE, expires_in_seconds=request.expires_in_seconds
        )
        await self._run(request.instance_id, wpb.SimulateRequest(temporary_ban=ban))
        return pb.TemporaryBanResponse()

    async def StreamReplaced(
        self, request: pb.StreamReplacedRequest, context: Context
    ) -> pb.StreamReplacedResponse:
        self._check(request.instance_id)
        replaced = wpb.SimulateRequest.StreamReplaced()
        await self._run(request.instance_id, wpb.SimulateRequest(stream_replaced=replaced))
        return pb.StreamReplacedResponse()

    async def FailSends(
        self, request: pb.FailSendsRequest, context: Context
    ) -> pb.FailSendsResponse:
        violations = [v for phone in request.phones for v in check_phone("phones", phone)]
        if request.code not in ("", "not_on_whatsapp", "463"):
            violations.append(FieldViolation("code", 'one of "not_on_whatsapp", "463", ""'))
        self._check(request.instance_id, violations)
        failing = wpb.SimulateRequest.FailSends(phones=list(request.phones), code=request.code)
        await self._run(request.instance_id, wpb.SimulateRequest(fail_sends=failing))
        return pb.FailSendsResponse()

    async def ListReceived(
        self, request: pb.ListReceivedRequest, context: Context
    ) -> pb.ListReceivedResponse:
        self._check(request.instance_id)
        received = await self._engines.phone_log(current_tenant(), request.instance_id)
        return pb.ListReceivedResponse(
            messages=[
                pb.ReceivedMessage(
                    recipient_jid=r.recipient_jid,
                    kind=r.kind,
                    text=r.text,
                    whatsapp_message_id=r.message_id,
                    receive_time=timestamp(int(r.received_at * 1e6)),
                    media_size=r.media_size,
                    media_sha256=r.media_sha256,
                    quoted_message_id=r.quoted_message_id,
                    mentioned_jids=[j for j in r.mentioned_jids.split(",") if j],
                    target_message_id=r.target_message_id,
                    poll_options=r.poll_options.split("\n") if r.poll_options else [],
                    poll_selectable_count=int(r.poll_selectable or 0),
                    view_once=r.view_once == "1",
                    link_url=r.link_url,
                    link_title=r.link_title,
                    link_description=r.link_description,
                    link_thumbnail_size=int(r.link_thumbnail_size or 0),
                )
                for r in received
            ]
        )

    async def SetKeepAlive(
        self, request: pb.SetKeepAliveRequest, context: Context
    ) -> pb.SetKeepAliveResponse:
        self._check(request.instance_id)
        keep_alive = wpb.SimulateRequest.KeepAlive(failing=request.failing)
        await self._run(request.instance_id, wpb.SimulateRequest(keep_alive=keep_alive))
        return pb.SetKeepAliveResponse()

    async def InjectIncomingMessage(
        self, request: pb.InjectIncomingMessageRequest, context: Context
    ) -> pb.InjectIncomingMessageResponse:
        self._check(request.instance_id, _injection_violations(request))
        tenant = current_tenant()
        message = incoming_message(f"{tenant}/{request.instance_id}", request)
        injection = wpb.SimulateRequest.InjectMessage(
            event_json=wire.encode(message), media_data=request.media.data
        )
        # Acknowledged only once its event is in the log: a crash after the answer cannot
        # lose it (a real engine acknowledges on decryption; see docs/events.md).
        with self._inbox.expecting(tenant, request.instance_id, message.message_id) as logged:
            await self._run(request.instance_id, wpb.SimulateRequest(inject_message=injection))
            try:
                await asyncio.wait_for(asyncio.shield(logged), INJECT_COMMIT_TIMEOUT)
            except TimeoutError:
                raise EngineUnavailable(
                    "the message reached the instance but its event was not logged in time"
                    " (the engine worker may have died); it may still appear, at most once"
                ) from None
        return pb.InjectIncomingMessageResponse(message_id=message.message_id)

    async def InjectPresence(
        self, request: pb.InjectPresenceRequest, context: Context
    ) -> pb.InjectPresenceResponse:
        self._check(request.instance_id, presence_violations(request))
        event = presence_event(f"{current_tenant()}/{request.instance_id}", request)
        await self._inject(request.instance_id, event)
        return pb.InjectPresenceResponse()

    async def InjectCall(
        self, request: pb.InjectCallRequest, context: Context
    ) -> pb.InjectCallResponse:
        violations = caller_violations(request.from_phone, request.from_lid)
        violations += check_text("call_id", request.call_id, 64)
        self._check(request.instance_id, violations)
        event = call_event(f"{current_tenant()}/{request.instance_id}", request)
        await self._inject(request.instance_id, event)
        return pb.InjectCallResponse(call_id=event.call_id)

    async def ReadOnPhone(
        self, request: pb.ReadOnPhoneRequest, context: Context
    ) -> pb.ReadOnPhoneResponse:
        self._check(request.instance_id, read_on_phone_violations(request))
        event = read_on_phone_event(f"{current_tenant()}/{request.instance_id}", request)
        await self._inject(request.instance_id, event)
        return pb.ReadOnPhoneResponse()

    async def _inject(self, instance_id: str, event: EngineEvent) -> None:
        injection = wpb.SimulateRequest.InjectEvent(event_json=wire.encode(event))
        await self._run(instance_id, wpb.SimulateRequest(inject_event=injection))

    async def SendReceipt(
        self, request: pb.SendReceiptRequest, context: Context
    ) -> pb.SendReceiptResponse:
        violations = check_phone("from_phone", request.from_phone)
        if request.kind not in RECEIPT_KINDS:
            violations.append(FieldViolation("kind", "one of DELIVERED, READ, PLAYED"))
        if not request.whatsapp_message_ids:
            violations.append(FieldViolation("whatsapp_message_ids", "at least one id"))
        self._check(request.instance_id, violations)
        receipt = wpb.SimulateRequest.Receipt(
            message_ids=list(request.whatsapp_message_ids),
            kind=RECEIPT_KINDS[request.kind],
            chat_jid=_user_jid(request.from_phone) if request.from_phone else "",
        )
        await self._run(request.instance_id, wpb.SimulateRequest(receipt=receipt))
        return pb.SendReceiptResponse()

    async def SetContacts(
        self, request: pb.SetContactsRequest, context: Context
    ) -> pb.SetContactsResponse:
        violations = [
            violation
            for index, contact in enumerate(request.contacts)
            for violation in check_phone(f"contacts[{index}].phone", contact.phone)
            + _required(f"contacts[{index}].phone", contact.phone)
        ]
        self._check(request.instance_id, violations)
        contacts = [
            wire.contact_to_proto(
                Contact(
                    jid=_user_jid(c.phone),
                    phone=c.phone,
                    lid=f"{c.lid}@lid" if c.lid else "",
                    full_name=c.full_name,
                    first_name=c.first_name,
                    push_name=c.push_name,
                    business_name=c.business_name,
                )
            )
            for c in request.contacts
        ]
        action = wpb.SimulateRequest.SetContacts(contacts=contacts)
        await self._run(request.instance_id, wpb.SimulateRequest(set_contacts=action))
        return pb.SetContactsResponse()

    async def PreloadHistory(
        self, request: pb.PreloadHistoryRequest, context: Context
    ) -> pb.PreloadHistoryResponse:
        self._check(request.instance_id, sim_history.violations(request))
        blobs = sim_history.blobs(f"{current_tenant()}/{request.instance_id}", request)
        for synced in blobs:
            preload = wpb.SimulateRequest.PreloadHistory(event_json=wire.encode(synced))
            await self._run(request.instance_id, wpb.SimulateRequest(preload_history=preload))
        return pb.PreloadHistoryResponse(blobs=len(blobs))

    async def SetRegisteredNumbers(
        self, request: pb.SetRegisteredNumbersRequest, context: Context
    ) -> pb.SetRegisteredNumbersResponse:
        violations = [v for phone in request.phones for v in check_phone("phones", phone)]
        self._check(request.instance_id, violations)
        action = wpb.SimulateRequest.SetRegistered(phones=list(request.phones))
        await self._run(request.instance_id, wpb.SimulateRequest(set_registered=action))
        return pb.SetRegisteredNumbersResponse()

    async def SetGroupPrivacy(
        self, request: pb.SetGroupPrivacyRequest, context: Context
    ) -> pb.SetGroupPrivacyResponse:
        violations = [v for phone in request.phones for v in check_phone("phones", phone)]
        self._check(request.instance_id, violations)
        args = {"refuse_adds": request.refuse_adds, "phones": list(request.phones)}
        await self._group_action(request.instance_id, args)
        return pb.SetGroupPrivacyResponse()

    async def ChangeGroup(
        self, request: pb.ChangeGroupRequest, context: Context
    ) -> pb.ChangeGroupResponse:
        violations = check_phone("by_phone", request.by_phone)
        if not request.group_jid.endswith("@g.us"):
            violations.append(FieldViolation("group_jid", "a group JID (...@g.us)"))
        change = request.WhichOneof("change")
        if change is None:
            violations.append(FieldViolation("change", "required"))
        phones = list(request.participants.phones)
        violations += [v for phone in phones for v in check_phone("participants.phones", phone)]
        if change == "ephemeral_seconds" and request.ephemeral_seconds < 0:
            violations.append(FieldViolation("ephemeral_seconds", "seconds, 0 or more"))
        self._check(request.instance_id, violations)
        args: dict[str, object] = {"by_phone": request.by_phone, "group_jid": request.group_jid}
        if change == "participants":
            args |= {"action": request.participants.action, "phones": phones}
        elif change == "settings":
            settings = request.settings
            args["announce"] = settings.announce if settings.HasField("announce") else None
            args["locked"] = settings.locked if settings.HasField("locked") else None
        else:
            args[str(change)] = getattr(request, str(change))
        await self._group_action(request.instance_id, args)
        return pb.ChangeGroupResponse()

    async def _group_action(self, instance_id: str, args: dict[str, object]) -> None:
        action = wpb.SimulateRequest.GroupAction(args_json=json.dumps(args))
        await self._run(instance_id, wpb.SimulateRequest(group_action=action))

    async def SetLidMappings(
        self, request: pb.SetLidMappingsRequest, context: Context
    ) -> pb.SetLidMappingsResponse:
        violations: list[FieldViolation] = []
        for index, mapping in enumerate(request.mappings):
            field = f"mappings[{index}]"
            violations += check_phone(f"{field}.phone", mapping.phone)
            violations += _required(f"{field}.phone", mapping.phone)
            if not (mapping.lid.isascii() and mapping.lid.isdigit()):
                violations.append(FieldViolation(f"{field}.lid", "the LID's user part: digits"))
        self._check(request.instance_id, violations)
        lids = {_user_jid(m.phone): f"{m.lid}@lid" for m in request.mappings}
        action = wpb.SimulateRequest.SetLidMappings(lids=lids)
        await self._run(request.instance_id, wpb.SimulateRequest(set_lid_mappings=action))
        return pb.SetLidMappingsResponse()


def _required(field: str, value: str) -> list[FieldViolation]:
    return [] if value else [FieldViolation(field, "required")]


def _user_jid(phone: str) -> str:
    return f"{phone.lstrip('+')}@s.whatsapp.net"


_CONTENTS = (
    "text",
    "media",
    "location",
    "contact",
    "reaction",
    "edited",
    "revoked",
    "poll",
    "poll_vote",
    "ephemeral_setting",
)


def _injection_violations(request: pb.InjectIncomingMessageRequest) -> list[FieldViolation]:
    violations = check_phone("from_phone", request.from_phone) + _required(
        "from_phone", request.from_phone
    )
    if request.from_lid and not request.from_lid.isdigit():
        violations.append(FieldViolation("from_lid", "the LID's user part: digits only"))
    if request.group_jid and not request.group_jid.endswith("@g.us"):
        violations.append(FieldViolation("group_jid", "a group JID ends in @g.us"))
    content = request.WhichOneof("content")
    if content is None:
        violations.append(FieldViolation("content", f"one of {', '.join(_CONTENTS)}"))
    elif content == "media":
        if request.media.kind not in MEDIA_KINDS:
            violations.append(FieldViolation("media.kind", "required"))
        if not request.media.data:
            violations.append(FieldViolation("media.data", "required"))
        if not request.media.mime_type:
            violations.append(FieldViolation("media.mime_type", "required"))
    elif content in ("reaction", "edited", "revoked"):
        if not getattr(request, content).message_id:
            violations.append(FieldViolation(f"{content}.message_id", "required"))
        if content == "edited" and not request.edited.text:
            violations.append(FieldViolation("edited.text", "required: the new text"))
    elif content == "poll":
        poll_content(request.poll, violations)
    elif content == "poll_vote" and not request.poll_vote.poll_message_id:
        violations.append(FieldViolation("poll_vote.poll_message_id", "required"))
    elif content == "ephemeral_setting" and request.ephemeral_setting.expiration_seconds < 0:
        violations.append(
            FieldViolation("ephemeral_setting.expiration_seconds", "seconds, 0 or more")
        )
    return violations


# InjectIncomingMessageRequest's content -> MessageReceived.kind, where they differ
_INJECTED_KINDS = {"edited": "edit", "revoked": "revoke"}


def incoming_message(key: str, request: pb.InjectIncomingMessageRequest) -> MessageReceived:
    """The MessageReceived a real engine would report for this injected message."""
    sender = _user_jid(request.from_phone)
    content = request.WhichOneof("content")
    kind = MEDIA_KINDS[request.media.kind] if content == "media" else str(content)
    kind = _INJECTED_KINDS.get(kind, kind)
    media, location, contact = request.media, request.location, request.contact
    text = {
        "text": request.text,
        "media": media.caption,
        "edited": request.edited.text,
        "poll": request.poll.question,
    }
    poll, vote = request.poll, request.poll_vote
    return MessageReceived(
        key=key,
        message_id=request.message_id or f"3A{secrets.token_hex(9).upper()}",
        chat_jid=request.group_jid or sender,
        sender_jid=sender,
        sender_lid=f"{request.from_lid}@lid" if request.from_lid else "",
        push_name=request.push_name,
        group_jid=request.group_jid,
        timestamp=float(int(time.time())),  # WhatsApp stamps whole seconds
        kind=kind,
        text=text.get(str(content), ""),
        media_mime_type=media.mime_type,
        media_file_name=media.file_name,
        media_seconds=media.seconds,
        latitude=location.latitude,
        longitude=location.longitude,
        location_name=location.name,
        location_address=location.address,
        contact_name=contact.display_name,
        contact_vcard=contact.vcard
        or (contact.phone and vcard_for(contact.display_name, contact.phone)),
        reaction_emoji=request.reaction.emoji,
        reacted_message_id=request.reaction.message_id,
        quoted_message_id=request.reply_to.message_id,
        quoted_sender_jid=request.reply_to.sender_jid,
        target_message_id=request.edited.message_id
        or request.revoked.message_id
        or vote.poll_message_id,
        view_once=media.view_once,
        poll_options=tuple(poll.options),
        poll_selectable=poll.selectable_count,
        # As a real engine reports a vote once decrypted: the chosen options' hashes.
        poll_votes=tuple(poll_option_sha256(option) for option in vote.options),
        ephemeral_seconds=request.ephemeral_setting.expiration_seconds,
    )
