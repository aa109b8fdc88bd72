"""Webhook bodies and their pieces, without a gateway: Evolution API v2-compatible payloads
against fixtures written from Evolution's webhook payloads, the proto JSON body, signatures
against the `standardwebhooks` reference, secrets, the retry schedule and the address guard."""

from __future__ import annotations

import ipaddress
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as Verifier

from zapgate.gateway.webhooks.address_guard import AddressRefused, is_public, resolve
from zapgate.gateway.webhooks.evolution import Envelope, to_evolution
from zapgate.gateway.webhooks.payloads import proto_json
from zapgate.gateway.webhooks.signing import signed_headers
from zapgate.gateway.webhooks.signing_secret import (
    generate_secret,
    open_secret,
    seal_secret,
    secret_key,
)
from zapgate.gateway.webhooks.timings import WebhookSettings, retry_delay
from zapgate.sessions.vault import Keyring, MasterKey, Undecryptable
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb

FIXTURES = Path(__file__).parent / "fixtures" / "evolution"
ENVELOPE = Envelope(
    destination="https://receiver.example.com/hook",
    sender="5511999998888@s.whatsapp.net",
    server_url="https://zapgate.example.com",
)
WHEN_US = 1_717_243_200_250_000  # 2024-06-01T12:00:00.250Z


def event(**payload: object) -> epb.Event:
    built = epb.Event(cursor=42, instance_id="sales", **payload)  # type: ignore[arg-type]
    built.time.FromMicroseconds(WHEN_US)
    return built


def fixture(name: str) -> object:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_a_text_message_is_messages_upsert() -> None:
    received = epb.MessageReceived(
        message_id="3EB0C431C26A1916F1E2",
        chat_jid="5511988887777@s.whatsapp.net",
        sender_jid="5511988887777@s.whatsapp.net",
        push_name="Ana",
        text="Oi, tudo bem?",
    )
    received.sent_time.FromSeconds(1_717_243_200)
    body = to_evolution(event(message_received=received), ENVELOPE)
    assert body == fixture("messages.upsert")


def test_a_reply_is_a_conversation_with_its_context_lifted() -> None:
    received = epb.MessageReceived(
        message_id="3EB0C431C26A1916F1E3",
        chat_jid="5511988887777@s.whatsapp.net",
        sender_jid="5511988887777@s.whatsapp.net",
        push_name="Ana",
        text="Pode ser amanhã",
        reply_to=epb.ReplyContext(
            message_id="3EB0D1A2B3C4D5E6F708", sender_jid="5511999998888@s.whatsapp.net"
        ),
    )
    received.sent_time.FromSeconds(1_717_243_200)
    body = to_evolution(event(message_received=received), ENVELOPE)
    assert body == fixture("messages.upsert.reply")


def test_a_group_image_names_its_participant() -> None:
    received = epb.MessageReceived(
        message_id="3EB0AA0000000000000B",
        chat_jid="120363025246125486@g.us",
        group_jid="120363025246125486@g.us",
        sender_jid="5511977776666@s.whatsapp.net",
        push_name="Bruno",
        media=epb.ReceivedMedia(
            kind=epb.MEDIA_KIND_IMAGE, mime_type="image/jpeg", size=48213, caption="nota fiscal"
        ),
    )
    received.sent_time.FromSeconds(1_717_243_200)
    body = to_evolution(event(message_received=received), ENVELOPE)
    assert body == fixture("messages.upsert.group-image")


def test_an_edit_is_messages_edited_with_the_protocol_message() -> None:
    received = epb.MessageReceived(
        message_id="3EB0AA0000000000000D",  # the edit's own id; Evolution names the edited one
        chat_jid="120363025246125486@g.us",
        group_jid="120363025246125486@g.us",
        sender_jid="5511977776666@s.whatsapp.net",
        edited=epb.MessageEdited(message_id="3EB0AA0000000000000C", text="nota fiscal corrigida"),
    )
    received.sent_time.FromSeconds(1_717_243_200)
    body = to_evolution(event(message_received=received), ENVELOPE)
    assert body == fixture("messages.edited")


def test_a_deletion_for_everyone_is_messages_delete_with_the_key() -> None:
    received = epb.MessageReceived(
        message_id="3EB0C431C26A1916F1FF",
        chat_jid="5511988887777@s.whatsapp.net",
        sender_jid="5511988887777@s.whatsapp.net",
        revoked=epb.MessageRevoked(message_id="3EB0C431C26A1916F1E2"),
    )
    body = to_evolution(event(message_received=received), ENVELOPE)
    assert body == fixture("messages.delete")


def test_a_poll_is_a_poll_creation_message_and_votes_are_skipped() -> None:
    poll = mpb.Poll(question="Dia?", options=["seg", "ter"], selectable_count=1)
    received = epb.MessageReceived(
        message_id="3EB0POLL", chat_jid="5511988887777@s.whatsapp.net", poll=poll
    )
    body = to_evolution(event(message_received=received), ENVELOPE)
    assert body is not None
    assert body["data"]["messageType"] == "pollCreationMessage"
    assert body["data"]["message"] == {
        "pollCreationMessage": {
            "name": "Dia?",
            "options": [{"optionName": "seg"}, {"optionName": "ter"}],
            "selectableOptionsCount": 1,
        }
    }
    vote = epb.MessageReceived(
        message_id="3EB0VOTE",
        chat_jid="5511988887777@s.whatsapp.net",
        poll_vote=epb.PollVote(poll_message_id="3EB0POLL", options=["seg"]),
    )
    assert to_evolution(event(message_received=vote), ENVELOPE) is None


def test_presences_and_typing_are_presence_update() -> None:
    offline = epb.PresenceChanged(jid="5511988887777@s.whatsapp.net", available=False)
    offline.last_seen.FromSeconds(1_717_243_100)
    body = to_evolution(event(presence_changed=offline), ENVELOPE)
    assert body == fixture("presence.update")
    typing = epb.ChatPresenceChanged(
        chat_jid="120363025246125486@g.us",
        sender_jid="5511977776666@s.whatsapp.net",
        presence=mpb.CHAT_PRESENCE_RECORDING,
    )
    body = to_evolution(event(chat_presence_changed=typing), ENVELOPE)
    assert body == fixture("presence.update.typing")
    online = epb.PresenceChanged(jid="5511988887777@s.whatsapp.net", available=True)
    body = to_evolution(event(presence_changed=online), ENVELOPE)
    assert body is not None
    assert body["data"]["presences"] == {
        "5511988887777@s.whatsapp.net": {"lastKnownPresence": "available"}
    }


def test_a_call_offer_is_call() -> None:
    call = epb.CallReceived(
        call_id="A1B2C3D4E5F60718293A4B5C6D7E8F90",
        caller_jid="5511988887777@s.whatsapp.net",
        caller_lid="98765432109876@lid",
        rejected=True,
    )
    call.offer_time.FromSeconds(1_717_243_200)
    assert to_evolution(event(call_received=call), ENVELOPE) == fixture("call")


def test_connected_is_connection_update_open() -> None:
    change = epb.StateChanged(state=ipb.INSTANCE_STATE_CONNECTED, reason=ipb.STATE_REASON_CONNECTED)
    assert to_evolution(event(state_changed=change), ENVELOPE) == fixture("connection.update")


def test_read_is_messages_update() -> None:
    change = epb.MessageStateChanged(
        message_id="msg_01",
        state=mpb.MESSAGE_STATE_READ,
        whatsapp_message_id="3EB0D1A2B3C4D5E6F708",
        recipient_jid="5511988887777@s.whatsapp.net",
    )
    body = to_evolution(event(message_state_changed=change), ENVELOPE)
    assert body == fixture("messages.update")


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        ({"state_changed": epb.StateChanged(state=ipb.INSTANCE_STATE_LOGGED_OUT)}, "close"),
        ({"state_changed": epb.StateChanged(state=ipb.INSTANCE_STATE_PAIRING)}, "connecting"),
    ],
)
def test_other_states_close_or_connect(payload: dict[str, object], name: str) -> None:
    body = to_evolution(event(**payload), ENVELOPE)
    assert body is not None
    assert body["data"]["state"] == name


GROUP = "120363040000000000@g.us"
ADMIN = "5511988887777@s.whatsapp.net"


def test_a_promotion_is_group_participants_update() -> None:
    changed = epb.GroupChanged(
        group_jid=GROUP,
        change=epb.GROUP_CHANGE_PARTICIPANTS_PROMOTED,
        actor_jid=ADMIN,
        participants=["5511977776666@s.whatsapp.net", "5511966665555@s.whatsapp.net"],
    )
    body = to_evolution(event(group_changed=changed), ENVELOPE)
    assert body == fixture("group-participants.update")


def test_a_new_name_is_groups_update() -> None:
    changed = epb.GroupChanged(
        group_jid=GROUP, change=epb.GROUP_CHANGE_NAME, actor_jid=ADMIN, name="Suporte VIP"
    )
    assert to_evolution(event(group_changed=changed), ENVELOPE) == fixture("groups.update")


def test_group_settings_topic_and_own_membership() -> None:
    def data(**fields: object) -> Any:
        body = to_evolution(
            event(group_changed=epb.GroupChanged(group_jid=GROUP, **fields)), ENVELOPE
        )  # type: ignore[arg-type]
        assert body is not None
        return body["data"]

    assert data(change=epb.GROUP_CHANGE_SETTINGS, locked=True) == [{"id": GROUP, "restrict": True}]
    assert data(change=epb.GROUP_CHANGE_SETTINGS, announce=False, locked=False) == [
        {"id": GROUP, "announce": False, "restrict": False}
    ]
    assert data(change=epb.GROUP_CHANGE_TOPIC, topic="") == [{"id": GROUP, "desc": ""}]
    left = data(change=epb.GROUP_CHANGE_LEFT, participants=[ENVELOPE.sender])
    assert left["action"] == "remove"
    assert left["participants"] == [ENVELOPE.sender]
    assert "author" not in left
    joined = data(change=epb.GROUP_CHANGE_JOINED, participants=[ENVELOPE.sender])
    assert joined["action"] == "add"


def test_sent_is_send_message_and_events_without_equivalent_are_skipped() -> None:
    sent = epb.MessageStateChanged(message_id="m", state=mpb.MESSAGE_STATE_SENT)
    body = to_evolution(event(message_state_changed=sent), ENVELOPE)
    assert body is not None
    assert body["event"] == "send.message"
    queued = epb.MessageStateChanged(message_id="m", state=mpb.MESSAGE_STATE_QUEUED)
    for skipped in (
        event(message_state_changed=queued),
        event(contacts_synced=epb.ContactsSynced(added=1)),
        event(sending_paused=epb.SendingPaused(reason="x")),
        event(webhook_status_changed=epb.WebhookStatusChanged(webhook_id="wh_1")),
    ):
        assert to_evolution(skipped, ENVELOPE) is None


def test_the_default_body_is_the_event_in_proto_json() -> None:
    original = event(contacts_synced=epb.ContactsSynced(added=3))
    body = json.loads(proto_json(original))
    assert body == {
        "cursor": "42",
        "time": "2024-06-01T12:00:00.250Z",
        "instanceId": "sales",
        "contactsSynced": {"added": 3},
    }


def test_signatures_verify_with_the_reference_library() -> None:
    secret = generate_secret()
    key = secret_key(secret)
    assert key is not None
    body = b'{"hello":"world"}'
    headers = signed_headers(key, "evt_1", int(time.time()), body)
    assert Verifier(secret).verify(body, headers) == {"hello": "world"}


def test_secrets_are_checked_and_sealed_per_webhook() -> None:
    assert secret_key("whsec_" + "A" * 32) is not None  # 24 bytes
    for bad in ("", "whsec_", "whsec_!!!", "sk_" + "A" * 32, "whsec_" + "A" * 16):
        assert secret_key(bad) is None
    keyring = Keyring(MasterKey.generate())
    secret = generate_secret()
    sealed = seal_secret(keyring, "acme", "wh_1", secret)
    assert secret.encode() not in bytes(sealed.ciphertext)
    assert open_secret(keyring, "acme", "wh_1", sealed) == secret
    with pytest.raises(Undecryptable):
        open_secret(keyring, "acme", "wh_2", sealed)  # another webhook's seal
    with pytest.raises(Undecryptable):
        open_secret(Keyring(MasterKey.generate()), "acme", "wh_1", sealed)


def test_retries_back_off_with_full_jitter_up_to_the_cap() -> None:
    settings = WebhookSettings(retry_base_seconds=1.0, retry_cap_seconds=60.0)
    rng = random.Random(7)
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (5, 16.0), (7, 60.0), (30, 60.0)):
        delays = [retry_delay(settings, attempts, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
        assert min(delays) < ceiling * 0.2


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fc00::1",
        "0.0.0.0",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
async def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    with pytest.raises(AddressRefused):
        await resolve(address, 80, allow_private=False)
    allowed = await resolve(address, 80, allow_private=True)
    assert ipaddress.ip_address(allowed) == ipaddress.ip_address(address)


async def test_public_addresses_and_names_resolving_to_loopback() -> None:
    assert await resolve("8.8.8.8", 443, allow_private=False) == "8.8.8.8"
    with pytest.raises(AddressRefused, match="not a public address"):
        await resolve("localhost", 80, allow_private=False)
