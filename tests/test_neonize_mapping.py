"""neonize's real protobuf events mapped to zapgate's engine events (sessions/neonize_events.py).

Every event is built with neonize's own classes, with every field Go fills in (the messages
are proto2 and Go's Marshal refuses one with a required field unset), and passes through the
bytes-and-back trip neonize makes (Go marshals, `Event.execute` parses by event code), so
the mapper sees what neonize really hands over."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from zapgate.sessions import neonize_events
from zapgate.sessions.events import (
    ClientOutdated,
    Connected,
    ConnectFailed,
    ConnectRefused,
    Disconnected,
    KeepAliveFailing,
    KeepAliveRestored,
    LoggedOut,
    Paired,
    QrShown,
    QrTimedOut,
    ReadElsewhere,
    Receipt,
    StreamReplaced,
    TemporarilyBanned,
)

with warnings.catch_warnings():
    # neonize's import leaks two `uname -a` pipes; pytest would fail on their warnings.
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.events import EVENT_TO_INT, INT_TO_EVENT
    from neonize.proto import Neonize_pb2 as pb

KEY = "acme/sales-1"
WA = "s.whatsapp.net"


def jid(user: str, server: str, *, device: int = 0, agent: int = 0) -> Any:
    """A JID as neonize's Go side encodes one (EncodeJidProto sets every field)."""
    return pb.JID(
        User=user, RawAgent=agent, Device=device, Integrator=0, Server=server, IsEmpty=not user
    )


PHONE_JID = jid("5511999998888", WA, device=12)
LID_JID = jid("123456789012345", "lid", device=3)


def device(of: Any) -> Any:
    return delivered(
        pb.Device(
            JID=of, LID=LID_JID, Platform="", BussinessName="", PushName="Sales", Initialized=True
        )
    )


def delivered(message: Any) -> Any:
    """The message as neonize's callback parses it from Go's bytes."""
    data = message.SerializeToString()  # raises, like Go's Marshal, if a required field is unset
    return INT_TO_EVENT[EVENT_TO_INT[type(message)]].FromString(data)


def mapped(message: Any, me: Any = None) -> Any:
    return neonize_events.to_engine_event(KEY, delivered(message), me)


def test_connected_takes_the_jid_and_phone_of_the_device_neonize_reported() -> None:
    assert mapped(pb.Connected(status=True), device(PHONE_JID)) == Connected(
        KEY, jid="5511999998888:12@s.whatsapp.net", phone="+5511999998888"
    )


def test_connected_on_a_lid_has_no_phone_number() -> None:
    assert mapped(pb.Connected(status=True), device(LID_JID)) == Connected(
        KEY, jid="123456789012345:3@lid", phone=""
    )


def test_connected_before_neonize_reported_the_device() -> None:
    assert mapped(pb.Connected(status=True)) == Connected(KEY, jid="", phone="")


def test_pair_success_is_paired() -> None:
    success = pb.PairStatus(
        ID=PHONE_JID, BusinessName="", Platform="android", Status=pb.PairStatus.SUCCESS
    )
    assert mapped(success) == Paired(
        KEY, jid="5511999998888:12@s.whatsapp.net", phone="+5511999998888"
    )


def test_pair_error_is_left_to_the_qr_channel() -> None:
    error = pb.PairStatus(
        ID=PHONE_JID,
        BusinessName="",
        Platform="android",
        Status=pb.PairStatus.ERROR,
        Error="bad signature",
    )
    assert mapped(error) is None


def test_disconnected() -> None:
    assert mapped(pb.Disconnected(status=True)) == Disconnected(KEY)


def test_logged_out_names_the_reason() -> None:
    event = pb.LoggedOut(OnConnect=False, Reason=pb.LOGGED_OUT)
    assert mapped(event) == LoggedOut(KEY, detail="LOGGED_OUT")
    on_connect = pb.LoggedOut(OnConnect=True, Reason=pb.MAIN_DEVICE_GONE)
    assert mapped(on_connect) == LoggedOut(KEY, detail="MAIN_DEVICE_GONE")


def test_stream_replaced() -> None:
    assert mapped(pb.StreamReplaced()) == StreamReplaced(KEY)


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (pb.TemporaryBan.SEND_TO_TOO_MANY_PEOPLE, 101),
        (pb.TemporaryBan.BLOCKED_BY_USERS, 102),
        (pb.TemporaryBan.CREATED_TOO_MANY_GROUPS, 103),
        (pb.TemporaryBan.SENT_TOO_MANY_SAME_MESSAGE, 104),
        (pb.TemporaryBan.BROADCAST_LIST, 106),
    ],
)
def test_temporary_ban_carries_whatsapps_code_and_time_left(reason: int, code: int) -> None:
    ban = pb.TemporaryBan(Code=reason, Expire=86_400)
    assert mapped(ban) == TemporarilyBanned(KEY, code=code, expires_in_seconds=86_400.0)


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (pb.GENERIC, 400),
        (pb.LOGGED_OUT, 401),
        (pb.TEMP_BANNED, 402),
        (pb.MAIN_DEVICE_GONE, 403),
        (pb.CLIENT_OUTDATED, 405),
        (pb.UNKNOWN_LOGOUT, 406),
        (pb.BAD_USER_AGENT, 409),
        (pb.INTERNAL_SERVER_ERROR, 500),
        (pb.EXPERIMENTAL, 501),
        (pb.SERVICE_UNAVAILABLE, 503),
    ],
)
def test_connect_failure_is_refused_with_whatsapps_code(reason: int, code: int) -> None:
    failure = pb.ConnectFailure(Reason=reason, Message="", Raw=pb.Node(Tag="failure"))
    assert mapped(failure) == ConnectRefused(
        KEY, code=code, detail=pb.ConnectFailureReason.Name(reason)
    )


def test_connect_failure_prefers_the_servers_message() -> None:
    failure = pb.ConnectFailure(
        Reason=pb.SERVICE_UNAVAILABLE, Message="try again later", Raw=pb.Node(Tag="failure")
    )
    assert mapped(failure) == ConnectRefused(KEY, code=503, detail="try again later")


def test_client_outdated() -> None:
    assert mapped(pb.ClientOutdated()) == ClientOutdated(KEY)


def test_keepalive_timeout_counts_the_failures() -> None:
    timeout = pb.KeepAliveTimeout(ErrorCount=3, LastSuccess=1_790_000_000)
    assert mapped(timeout) == KeepAliveFailing(KEY, failures=3)


def test_keepalive_restored() -> None:
    assert mapped(pb.KeepAliveRestored()) == KeepAliveRestored(KEY)


def test_events_zapgate_does_not_report_map_to_nothing() -> None:
    assert mapped(pb.OfflineSyncCompleted(Count=4)) is None
    assert mapped(pb.StreamError(Code="503", Raw=pb.Node(Tag="stream:error"))) is None


def test_every_mapped_type_is_one_neonize_can_subscribe_to() -> None:
    assert all(event_type in EVENT_TO_INT for event_type in neonize_events.MAPPED_EVENT_TYPES)
    assert len(set(neonize_events.MAPPED_EVENT_TYPES)) == 11
    assert pb.Receipt in neonize_events.MAPPED_EVENT_TYPES


def test_qr_codes_follow_whatsmeows_schedule() -> None:
    code = b"2@ref123,noiseKeyB64=,identityKeyB64=,advSecretB64="
    shown = [neonize_events.qr_shown(KEY, code, index) for index in range(6)]
    assert shown[0] == QrShown(KEY, code=code.decode(), index=0, lifetime_seconds=60.0)
    assert shown[1:] == [
        QrShown(KEY, code=code.decode(), index=index, lifetime_seconds=20.0)
        for index in range(1, 6)
    ]


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("success", None),
        ("timeout", QrTimedOut(KEY)),
        ("err-client-outdated", ClientOutdated(KEY)),
        (
            "err-scanned-without-multidevice",
            ConnectFailed(KEY, detail="QR pairing ended: err-scanned-without-multidevice"),
        ),
        (
            "err-unexpected-state",
            ConnectFailed(KEY, detail="QR pairing ended: err-unexpected-state"),
        ),
    ],
)
def test_the_end_of_the_qr_channel(status: str, event: object) -> None:
    assert neonize_events.login_status_event(KEY, status) == event


@pytest.mark.parametrize(
    ("of", "text", "phone"),
    [
        (jid("5511999998888", WA), "5511999998888@s.whatsapp.net", "+5511999998888"),
        (jid("4915112345678", WA, device=2), "4915112345678:2@s.whatsapp.net", "+4915112345678"),
        (jid("4915112", WA, agent=1, device=2), "4915112.1:2@s.whatsapp.net", "+4915112"),
        (jid("120363025246125888", "g.us"), "120363025246125888@g.us", ""),
        (jid("", WA), "s.whatsapp.net", ""),
    ],
)
def test_jids_print_like_whatsmeow_and_only_phone_jids_have_a_number(
    of: Any, text: str, phone: str
) -> None:
    assert neonize_events.jid_string(of) == text
    assert neonize_events.phone_number(of) == phone


# -- receipts --------------------------------------------------------------------------------

NO_JID = jid("", "")
RECIPIENT = jid("5511988887777", WA)
RECIPIENT_LID = jid("98765432109876", "lid")
GROUP = jid("120363025246125888", "g.us")
IDS = ["3EB0C431C26A1916E07E", "3EB0D8D5A5E3C1C01B9A"]


def receipt(
    kind: int,
    *,
    chat: Any = RECIPIENT,
    sender: Any = RECIPIENT,
    sender_alt: Any = NO_JID,
    from_me: bool = False,
    ids: list[str] = IDS,
) -> Any:
    """A receipt as neonize encodes whatsmeow's events.Receipt (EncodeReceipts)."""
    source = pb.MessageSource(
        Chat=chat,
        Sender=sender,
        IsFromMe=from_me,
        IsGroup=chat.Server == "g.us",
        AddressingMode=pb.PN if chat.Server != "lid" else pb.LID,
        SenderAlt=sender_alt,
        RecipientAlt=NO_JID,
        BroadcastListOwner=NO_JID,
    )
    return pb.Receipt(MessageSource=source, MessageIDs=ids, Timestamp=1_790_000_100, Type=kind)


@pytest.mark.parametrize(
    ("kind", "reported"),
    [
        (pb.Receipt.DELIVERED, "delivered"),
        (pb.Receipt.INACTIVE, "delivered"),
        (pb.Receipt.READ, "read"),
        (pb.Receipt.PLAYED, "played"),
    ],
)
def test_the_recipients_receipts_name_the_sent_messages(kind: int, reported: str) -> None:
    assert mapped(receipt(kind, sender=jid("5511988887777", WA, device=2))) == Receipt(
        KEY,
        message_ids=tuple(IDS),
        kind=reported,
        chat="5511988887777@s.whatsapp.net",
        from_jid="5511988887777@s.whatsapp.net",  # who, without the device
    )


@pytest.mark.parametrize(
    "kind",
    [
        pb.Receipt.SENDER,  # this account's other device got the copy of a sent message
        pb.Receipt.RETRY,  # whatsmeow re-encrypts and resends by itself
        pb.Receipt.READ_SELF,  # from this account's devices only: see below
        pb.Receipt.SERVER_ERROR,  # neonize 0.5.2's label for whatsmeow's "played-self"
        pb.Receipt.PEER_MSG,
        pb.Receipt.HISTORY_SYNC,
    ],
)
def test_receipts_that_are_not_the_recipients_are_not_reported(kind: int) -> None:
    assert mapped(receipt(kind)) is None


ME = jid("5511999998888", WA, device=0)


@pytest.mark.parametrize("kind", [pb.Receipt.READ, pb.Receipt.READ_SELF])
def test_a_chat_read_on_the_phone_is_read_elsewhere(kind: int) -> None:
    # The phone read messages it received: whatsmeow reports a read from "me", naming the
    # chat; "read-self" when the account turned read receipts off.
    read = receipt(kind, chat=RECIPIENT, sender=ME, from_me=True)
    assert mapped(read) == ReadElsewhere(
        KEY,
        chat="5511988887777@s.whatsapp.net",
        message_ids=tuple(IDS),
        timestamp=1_790_000_100.0,
    )


def test_a_chat_read_on_the_phone_names_a_lid_chat_by_phone_when_known() -> None:
    read = receipt(pb.Receipt.READ, chat=RECIPIENT_LID, sender=ME, from_me=True)
    read.MessageSource.RecipientAlt.CopyFrom(RECIPIENT)
    read.Timestamp = 1_790_000_100_250  # neonize's current builds: milliseconds
    assert mapped(read) == ReadElsewhere(
        KEY,
        chat="5511988887777@s.whatsapp.net",
        message_ids=tuple(IDS),
        timestamp=1_790_000_100.25,
    )
    in_group = receipt(pb.Receipt.READ, chat=GROUP, sender=ME, from_me=True)
    assert mapped(in_group) == ReadElsewhere(
        KEY, chat="120363025246125888@g.us", message_ids=tuple(IDS), timestamp=1_790_000_100.0
    )


@pytest.mark.parametrize(
    "kind", [pb.Receipt.DELIVERED, pb.Receipt.SENDER, pb.Receipt.PLAYED, pb.Receipt.PEER_MSG]
)
def test_other_receipts_from_this_accounts_own_devices_are_not_reported(kind: int) -> None:
    assert mapped(receipt(kind, chat=RECIPIENT, sender=ME, from_me=True)) is None
    assert mapped(receipt(pb.Receipt.READ, sender=ME, from_me=True, ids=[])) is None


def test_a_receipt_addressed_by_lid_names_the_chat_by_phone_when_known() -> None:
    by_lid = receipt(
        pb.Receipt.READ, chat=RECIPIENT_LID, sender=RECIPIENT_LID, sender_alt=RECIPIENT
    )
    assert mapped(by_lid) == Receipt(
        KEY,
        message_ids=tuple(IDS),
        kind="read",
        chat="5511988887777@s.whatsapp.net",
        from_jid="5511988887777@s.whatsapp.net",
        from_lid="98765432109876@lid",
    )
    unknown_phone = receipt(pb.Receipt.READ, chat=RECIPIENT_LID, sender=RECIPIENT_LID)
    assert mapped(unknown_phone) == Receipt(
        KEY,
        message_ids=tuple(IDS),
        kind="read",
        chat="98765432109876@lid",
        from_jid="98765432109876@lid",  # the LID is the only address there is
        from_lid="98765432109876@lid",
    )


def test_a_group_receipt_names_the_group() -> None:
    member = jid("5511988887777", WA, device=3)
    in_group = receipt(pb.Receipt.DELIVERED, chat=GROUP, sender=member, ids=IDS[:1])
    assert mapped(in_group) == Receipt(
        KEY,
        message_ids=(IDS[0],),
        kind="delivered",
        chat="120363025246125888@g.us",
        from_jid="5511988887777@s.whatsapp.net",  # the participant whose receipt it is
    )


def test_the_chat_of_a_receipt_never_names_a_device() -> None:
    on_device = receipt(pb.Receipt.PLAYED, chat=jid("5511988887777", WA, device=7))
    assert mapped(on_device).chat == "5511988887777@s.whatsapp.net"


def test_a_receipt_naming_no_message_is_not_reported() -> None:
    assert mapped(receipt(pb.Receipt.READ, ids=[])) is None
