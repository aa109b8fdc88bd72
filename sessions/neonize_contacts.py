"""whatsmeow's contact store and number lookups as zapgate's Contact and NumberCheck.

Pure functions: no Go calls, no I/O. whatsmeow keeps one contact row per JID it has heard
of: phone-number JIDs (names from the phone's address book, synced through app state) and,
since WhatsApp moved to LIDs, LIDs (mostly push names seen on LID-addressed messages). The
engine asks whatsmeow's LID map for the other JID of each (`alternates_wanted`), and
`to_contacts` merges the rows of one person under the phone-number JID.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from zapgate.sessions.engine import Contact, NumberCheck
from zapgate.sessions.errors import EngineError, NotConnected
from zapgate.sessions.events import InstanceKey
from zapgate.sessions.neonize_events import LID_SERVER, USER_SERVER, user_jid

E164 = re.compile(r"\+[1-9][0-9]{6,14}")

_NAME_FIELDS = ("full_name", "first_name", "push_name", "business_name")
# whatsmeow's texts when the instance cannot ask WhatsApp (nothing was asked).
_INSTANCE_DOWN = ("websocket not connected", "client is nil")


# -- contacts ----------------------------------------------------------------------------------


def alternates_wanted(stored: Iterable[Any]) -> list[Any]:
    """The JIDs (neonize's) of the stored contacts whose other JID to look up in whatsmeow's
    LID map: the LID of a phone-number JID, the phone-number JID of a LID."""
    return [contact.JID for contact in stored if _is_user(contact.JID)]


def to_contacts(stored: Iterable[Any], alternates: Mapping[str, Any]) -> list[Contact]:
    """neonize's Contact rows (`client.contact.get_all_contacts()`) as zapgate contacts, one
    per person, sorted by JID. `alternates` maps a row's `user@server` to the other JID of the
    same user (neonize's JID). A LID whose phone number whatsmeow does not know stays under
    its LID: it is the only address there is."""
    rows = sorted(
        (contact for contact in stored if _is_user(contact.JID)),
        # Phone-number rows first: their names come from the address book.
        key=lambda contact: (str(contact.JID.Server) != USER_SERVER, user_jid(contact.JID)),
    )
    merged: dict[str, dict[str, str]] = {}
    for contact in rows:
        jid, phone, lid = _addresses(contact.JID, alternates.get(user_jid(contact.JID)))
        info = contact.Info
        found = {
            "phone": phone,
            "lid": lid,
            "full_name": str(info.FullName),
            "first_name": str(info.FirstName),
            "push_name": str(info.PushName),
            "business_name": str(info.BusinessName),
        }
        entry = merged.setdefault(jid, {})
        for field, value in found.items():
            if value and not entry.get(field):
                entry[field] = value
    return [Contact(jid, **fields) for jid, fields in sorted(merged.items())]


def _addresses(jid: Any, alternate: Any) -> tuple[str, str, str]:
    """(JID to list the contact under, E.164 phone, LID) of one stored row."""
    other = user_jid(alternate) if alternate is not None else ""
    if str(jid.Server) == LID_SERVER:
        lid = user_jid(jid)
        if other.endswith(f"@{USER_SERVER}"):
            return other, f"+{alternate.User}", lid
        return lid, "", lid
    lid = other if other.endswith(f"@{LID_SERVER}") else ""
    return user_jid(jid), f"+{jid.User}", lid


def _is_user(jid: Any) -> bool:
    return str(jid.Server) in (USER_SERVER, LID_SERVER) and bool(jid.User)


# -- number checks -----------------------------------------------------------------------------


def check_phones(phones: Iterable[str]) -> None:
    """Refuses a list naming anything but E.164 numbers, before WhatsApp is asked."""
    wrong = [phone for phone in phones if not E164.fullmatch(phone)]
    if wrong:
        raise EngineError(
            f"not E.164 phone numbers (e.g. +5511999998888): {', '.join(map(repr, wrong))}"
        )


def to_number_checks(phones: list[str], answers: Iterable[Any]) -> list[NumberCheck]:
    """neonize's IsOnWhatsAppResponse list as one NumberCheck per phone asked, in the order
    asked. Each answer names its query (whatsmeow's Query: what WhatsApp echoes of the number
    asked, "+<digits>" possibly with "@c.us"). `jid` is the JID WhatsApp answered, which may
    differ from the number asked (Brazilian mobiles registered before the ninth digit)."""
    answers = list(answers)
    by_number: dict[str, Any] = {}
    for answer in answers:
        by_number.setdefault(_query_digits(str(answer.Query)), answer)
    checks = []
    for phone in phones:
        answer = by_number.get(phone[1:])
        if answer is None and len(set(phones)) == 1 and len(answers) == 1:
            answer = answers[0]  # one question, one answer, whatever its echo looks like
        if answer is None or not answer.IsIn:
            checks.append(NumberCheck(phone, on_whatsapp=False))
        else:
            checks.append(NumberCheck(phone, on_whatsapp=True, jid=user_jid(answer.JID)))
    return checks


def check_error(key: InstanceKey, text: str) -> EngineError:
    """What a failed IsOnWhatsApp (whatsmeow's error text) means."""
    if any(known in text for known in _INSTANCE_DOWN):
        return NotConnected(f"{key} could not check numbers: it is not connected ({text})")
    return EngineError(f"{key} could not check numbers on WhatsApp: {text}")


def contacts_error(key: InstanceKey, text: str) -> EngineError:
    return EngineError(f"{key} could not read its contacts from whatsmeow's store: {text}")


def _query_digits(query: str) -> str:
    return "".join(char for char in query.partition("@")[0] if char.isdigit())
