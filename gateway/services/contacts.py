"""ContactService: sync the linked phone's contacts, search them, check numbers."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc.aio

from zapgate.gateway.contacts import ContactBook, NumberAnswer
from zapgate.gateway.rpc.call_guard import current_tenant
from zapgate.gateway.rpc.errors import FieldViolation
from zapgate.gateway.rpc.paging import CONTACT_KEY, decode_page_token, encode_page_token, page_size
from zapgate.gateway.rpc.validation import check_instance_id, check_text, raise_if_any
from zapgate.gateway.services.convert import timestamp
from zapgate.gateway.store.contacts import StoredContact
from zapgate.gateway.store.instances import InstanceRepository
from zapgate.v1 import contact_pb2 as pb
from zapgate.v1 import contact_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
MAX_NUMBERS_PER_CALL = 500
MAX_QUERY_CHARS = 100
PHONE_PREFIX = re.compile(r"\+?[0-9]{1,15}")  # ASCII digits: str.isdigit() takes "²" too
MAX_JIDS_PER_CALL = 500
PHONE_SERVER, LID_SERVER = "s.whatsapp.net", "lid"
USER_JID = re.compile(r"[0-9]{1,20}@(s\.whatsapp\.net|lid)")


class ContactService(contact_pb2_grpc.ContactServiceServicer):
    def __init__(self, book: ContactBook, instances: InstanceRepository) -> None:
        self._book = book
        self._instances = instances

    async def SyncContacts(
        self, request: pb.SyncContactsRequest, context: Context
    ) -> pb.SyncContactsResponse:
        raise_if_any(check_instance_id("instance_id", request.instance_id))
        counts = await self._book.sync(current_tenant(), request.instance_id)
        return pb.SyncContactsResponse(
            added=counts.added,
            updated=counts.updated,
            unchanged=counts.unchanged,
            removed=counts.removed,
        )

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: Context
    ) -> pb.ListContactsResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        violations += check_text("query", request.query, MAX_QUERY_CHARS)
        if request.phone_prefix and not PHONE_PREFIX.fullmatch(request.phone_prefix):
            violations.append(FieldViolation("phone_prefix", "digits, optionally after a +"))
        raise_if_any(violations)
        tenant = current_tenant()
        await self._instances.require(tenant, request.instance_id)
        limit = page_size(request.page_size)
        filter_key = json.dumps([request.instance_id, request.query, request.phone_prefix])
        after = decode_page_token(request.page_token, filter_key, CONTACT_KEY)
        page = await self._book.contacts.page(
            tenant,
            request.instance_id,
            query=request.query,
            phone_prefix=request.phone_prefix,
            after=after,
            limit=limit + 1,
        )
        more = len(page) > limit
        page = page[:limit]
        token = ""
        if more:
            last = page[-1]
            token = encode_page_token([last.search_name, last.contact.jid], filter_key)
        return pb.ListContactsResponse(contacts=[_contact(c) for c in page], next_page_token=token)

    async def CheckNumbers(
        self, request: pb.CheckNumbersRequest, context: Context
    ) -> pb.CheckNumbersResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        if not request.phones:
            violations.append(FieldViolation("phones", "at least one number"))
        if len(request.phones) > MAX_NUMBERS_PER_CALL:
            violations.append(FieldViolation("phones", f"at most {MAX_NUMBERS_PER_CALL} per call"))
        raise_if_any(violations)
        answers = await self._book.check_numbers(
            current_tenant(), request.instance_id, list(request.phones)
        )
        return pb.CheckNumbersResponse(results=[_result(a) for a in answers])

    async def ResolveJids(
        self, request: pb.ResolveJidsRequest, context: Context
    ) -> pb.ResolveJidsResponse:
        violations = check_instance_id("instance_id", request.instance_id)
        if not request.jids:
            violations.append(FieldViolation("jids", "at least one JID"))
        if len(request.jids) > MAX_JIDS_PER_CALL:
            violations.append(FieldViolation("jids", f"at most {MAX_JIDS_PER_CALL} per call"))
        violations += [
            FieldViolation(f"jids[{index}]", "a phone-number JID (digits@s.whatsapp.net) or a LID")
            for index, jid in enumerate(request.jids)
            if not USER_JID.fullmatch(jid)
        ]
        raise_if_any(violations)
        asked = list(request.jids)
        others = await self._book.resolve_jids(current_tenant(), request.instance_id, asked)
        return pb.ResolveJidsResponse(
            results=[_resolved(jid, other) for jid, other in zip(asked, others, strict=True)]
        )


def _resolved(jid: str, other: str) -> pb.ResolvedJid:
    by_lid = jid.endswith("@" + LID_SERVER)
    phone_jid, lid = (other, jid) if by_lid else (jid, other)
    return pb.ResolvedJid(jid=jid, phone_jid=phone_jid, lid=lid, found=bool(other))


def _contact(stored: StoredContact) -> pb.Contact:
    c = stored.contact
    return pb.Contact(
        jid=c.jid,
        phone=c.phone,
        lid=c.lid,
        full_name=c.full_name,
        first_name=c.first_name,
        push_name=c.push_name,
        business_name=c.business_name,
        sync_time=timestamp(stored.synced_us),
    )


def _result(answer: NumberAnswer) -> pb.NumberResult:
    check = answer.check
    return pb.NumberResult(
        phone=answer.phone,
        on_whatsapp=check is not None and check.on_whatsapp,
        jid=check.jid if check is not None else "",
        cached=answer.cached,
        error_reason=answer.error_reason,
        error=answer.error,
        retry_after_seconds=answer.retry_after,
    )
