"""The neonize engine's reader calls: each runs one whatsmeow call on a neonize client and
turns neonize's exception into zapgate's typed engine error. They run on a call thread under
a read hold of the gate (NeonizeEngine._read); the engine decides when a call may run, these
only make it. Kept apart so offline tests can call them on a bare client (one whose Go side
was never made: whatsmeow answers "client is nil")."""

from __future__ import annotations

import importlib
from typing import Any

from zapgate.sessions import (
    neonize_contacts,
    neonize_events,
    neonize_inbound,
    neonize_send,
)
from zapgate.sessions.events import InstanceKey

# neonize has no type information: a module typed Any is all it offers.
neonize_client: Any = importlib.import_module("neonize.client")


def unlink(client: Any) -> None:
    # Nothing to unlink while only QR codes are shown (connected, not logged in).
    if client.is_logged_in:
        client.logout()


# -- sending, typing, read marks, presence, calls -----------------------------------------


def look_up(client: Any, key: InstanceKey, user: str) -> str:
    """The number WhatsApp knows for `user` (digits); SendRefused when it has no WhatsApp."""
    try:
        answers = client.is_on_whatsapp(f"+{user}")
    except neonize_client.IsOnWhatsAppError as error:
        raise neonize_send.lookup_error(key, str(error)) from error
    return neonize_send.known_user(user, answers)


def upload(client: Any, key: InstanceKey, kind: str, data: bytes, media_type: Any) -> Any:
    """Encrypts and uploads a media file to WhatsApp's media servers (neonize's
    UploadResponse)."""
    try:
        return client.upload(data, media_type)
    except neonize_client.UploadError as error:
        raise neonize_send.upload_error(key, kind, str(error)) from error


def deliver(client: Any, key: InstanceKey, to: Any, message: Any) -> Any:
    """Sends a built message and waits for the server's acknowledgement (neonize's
    SendResponse)."""
    try:
        return client.send_message(to, message)
    except neonize_client.SendMessageError as error:
        raise neonize_send.send_error(key, str(error)) from error


def show_typing(client: Any, key: InstanceKey, to: Any, typing: bool) -> None:
    state, media = neonize_send.typing_state(typing)
    try:
        client.send_chat_presence(to, state, media)
    except neonize_client.SendPresenceError as error:
        raise neonize_send.typing_error(key, str(error)) from error


def mark_read(client: Any, *, key: InstanceKey, chat: Any, sender: Any, ids: list[str]) -> None:
    try:
        client.mark_read(*ids, chat=chat, sender=sender, receipt=neonize_send.READ_RECEIPT)
    except neonize_client.MarkReadError as error:
        raise neonize_send.read_error(key, str(error)) from error


def reject_call(client: Any, *, key: InstanceKey, caller: Any, call_id: str) -> None:
    try:
        client.reject_call(caller, call_id)
    except neonize_client.NeonizeError as error:  # RejectCallError (neonize.exc only)
        raise neonize_send.call_error(key, str(error)) from error


def account_presence(client: Any, *, key: InstanceKey, value: Any) -> None:
    try:
        client.send_presence(value)
    except neonize_client.SendPresenceError as error:
        raise neonize_send.presence_error(key, str(error)) from error


def subscribe_presence(client: Any, *, key: InstanceKey, contact: Any) -> None:
    try:
        client.subscribe_presence(contact)
    except neonize_client.SubscribePresenceError as error:
        raise neonize_send.presence_error(key, str(error)) from error


def presence(client: Any, *, key: InstanceKey, to: Any, state: Any, media: Any) -> None:
    try:
        client.send_chat_presence(to, state, media)
    except neonize_client.SendPresenceError as error:
        raise neonize_send.presence_error(key, str(error)) from error


# -- media, contacts, numbers and the LID map ---------------------------------------------


def download(client: Any, key: InstanceKey, message: Any) -> bytes:
    try:
        return bytes(client.download_any(message))
    except neonize_client.DownloadError as error:
        raise neonize_inbound.download_error(key, str(error)) from error


def stored_contacts(client: Any, key: InstanceKey) -> list[Any]:
    try:
        return list(client.contact.get_all_contacts())
    except neonize_client.ContactStoreError as error:
        raise neonize_contacts.contacts_error(key, str(error)) from error


def alternates(client: Any, jids: list[Any]) -> dict[str, Any]:
    """The other JID of each user in whatsmeow's LID map (only those it knows)."""
    found: dict[str, Any] = {}
    for jid in jids:
        look_up = (
            client.get_pn_from_lid
            if jid.Server == neonize_events.LID_SERVER
            else client.get_lid_from_pn
        )
        try:
            other = look_up(jid)
        except neonize_client.GetJIDFromStoreError:
            continue  # a broken mapping row costs that contact its other JID, nothing more
        if other.User:
            found[neonize_events.user_jid(jid)] = other
    return found


def check_numbers(client: Any, key: InstanceKey, phones: list[str]) -> list[Any]:
    try:
        return list(client.is_on_whatsapp(*phones))
    except neonize_client.IsOnWhatsAppError as error:
        raise neonize_contacts.check_error(key, str(error)) from error
