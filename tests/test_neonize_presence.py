"""neonize's presence, chat presence and call offer events, built as its real protobufs (and
through a serialize round trip, as they leave Go), mapped to zapgate's events with the phone
JID and the LID where WhatsApp gave both."""

from __future__ import annotations

import warnings
from typing import Any

from tests.test_neonize_inbound import ANA, ANA_LID, GROUP, KEY, NO_JID, SENT_AT, source
from zapgate.sessions import neonize_presence
from zapgate.sessions.events import CallReceived, ChatPresenceChanged, PresenceChanged

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto import Neonize_pb2 as pb

# What neonize's Go side fills of every call offer (its required fields).
REMOTE = pb.CallRemoteMeta(remotePlatform="android", remoteVersion="2.25.1")
OFFER_NODE = pb.Node(Tag="offer", Nil=False)
State = pb.ChatPresence.ChatPresence
MediaKind = pb.ChatPresence.ChatPresenceMedia


def mapped(event: Any) -> Any:
    return neonize_presence.to_presence_event(
        KEY, type(event).FromString(event.SerializeToString())
    )


def test_a_contact_online_and_offline_with_last_seen() -> None:
    online = mapped(pb.Presence(From=ANA, Unavailable=False, LastSeen=0))
    assert online == PresenceChanged(KEY, jid="5511988887777@s.whatsapp.net", available=True)
    offline = mapped(pb.Presence(From=ANA_LID, Unavailable=True, LastSeen=SENT_AT * 1000))
    assert offline == PresenceChanged(
        KEY,
        jid="98765432109876@lid",
        lid="98765432109876@lid",
        available=False,
        last_seen=float(SENT_AT),
    )


def test_typing_recording_and_paused() -> None:
    direct = source(sender=ANA_LID, chat=ANA_LID, sender_alt=ANA)
    cases = [
        (State.COMPOSING, MediaKind.TEXT, "composing"),
        (State.COMPOSING, MediaKind.AUDIO, "recording"),
        (State.PAUSED, MediaKind.TEXT, "paused"),
    ]
    for state, media, expected in cases:
        event = mapped(pb.ChatPresence(MessageSource=direct, State=state, Media=media))
        assert event == ChatPresenceChanged(
            KEY,
            chat_jid="5511988887777@s.whatsapp.net",  # the LID chat, by its number
            sender_jid="5511988887777@s.whatsapp.net",
            sender_lid="98765432109876@lid",
            presence=expected,
        )


def test_typing_in_a_group_names_the_group_and_the_participant() -> None:
    in_group = source(chat=GROUP, sender=ANA)
    event = mapped(
        pb.ChatPresence(MessageSource=in_group, State=State.COMPOSING, Media=MediaKind.TEXT)
    )
    assert isinstance(event, ChatPresenceChanged)
    assert (event.chat_jid, event.sender_jid) == (
        "120363025246125888@g.us",
        "5511988887777@s.whatsapp.net",
    )


def test_a_call_offer_names_the_caller_by_number_and_lid() -> None:
    meta = pb.BasicCallMeta(
        callCreator=ANA_LID, callCreatorAlt=ANA, timestamp=SENT_AT * 1000, callID="CALL1"
    )
    getattr(meta, "from").CopyFrom(ANA_LID)
    offer = pb.CallOffer(basicCallMeta=meta, callRemoteMeta=REMOTE, data=OFFER_NODE)
    assert mapped(offer) == CallReceived(
        KEY,
        call_id="CALL1",
        caller_jid="5511988887777@s.whatsapp.net",
        caller_lid="98765432109876@lid",
        timestamp=float(SENT_AT),
        from_jid="98765432109876@lid",  # as offered: what a rejection must name
    )


def test_a_call_offer_without_an_alternate_keeps_what_it_has() -> None:
    meta = pb.BasicCallMeta(
        callCreator=ANA_LID, callCreatorAlt=NO_JID, timestamp=SENT_AT, callID="C2"
    )
    getattr(meta, "from").CopyFrom(ANA_LID)
    event = mapped(pb.CallOffer(basicCallMeta=meta, callRemoteMeta=REMOTE, data=OFFER_NODE))
    assert isinstance(event, CallReceived)
    assert (event.caller_jid, event.caller_lid) == ("98765432109876@lid", "98765432109876@lid")
    assert event.timestamp == float(SENT_AT)  # older neonize builds stamp seconds
