"""whatsmeow's contact store and number lookups as zapgate's Contact and NumberCheck
(sessions/neonize_contacts.py), and the engine's download, contact and number calls up to
the edge reachable without WhatsApp.

Contact rows and lookup answers are neonize's own protobufs with every field its Go side
fills in (EncodeContacts, EncodeIsOnWhatsApp), parsed from bytes the way neonize's
`get_all_contacts` and `is_on_whatsapp` parse Go's answers. The engine part runs in its own
interpreter (a Go crash takes a process down). It cannot read a contact store offline:
neonize's GetAllContacts and LID-map calls dereference the client without a nil check, so
with no connected client Go would crash: the engine refuses them before Go is called."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import Report, Scenario, play, run_main
from tests.test_neonize_inbound import MEDIA_FILE, jid
from zapgate.sessions import neonize_contacts
from zapgate.sessions.engine import Contact, NumberCheck
from zapgate.sessions.errors import EngineError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto import Neonize_pb2 as pb
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa

KEY = "acme/sales-1"
WA = "s.whatsapp.net"

ANA = jid("5511988887777", WA)
ANA_LID = jid("98765432109876", "lid")
BRUNO = jid("5521977776666", WA)
CARLA_LID = jid("55544433322211", "lid")  # her number never reached this device
DIEGO_LID = jid("11122233344455", "lid")
DIEGO = jid("4915112345678", WA)


def row(of: Any, **names: str) -> Any:
    info = {
        "Found": True,
        "FirstName": "",
        "FullName": "",
        "PushName": "",
        "BusinessName": "",
        "RedactedPhone": "",
        **names,
    }
    return pb.Contact(JID=of, Info=pb.ContactInfo(**info))


def stored(*rows: Any) -> list[Any]:
    """The rows as neonize's get_all_contacts returns them."""
    answer = pb.ContactsGetAllContactsReturnFunction(Contact=rows)
    return list(
        pb.ContactsGetAllContactsReturnFunction.FromString(answer.SerializeToString()).Contact
    )


def key_of(of: Any) -> str:
    return f"{of.User}@{of.Server}"


def test_each_person_is_one_contact_under_the_phone_number() -> None:
    rows = stored(
        # Go's map order: the LID rows (push names) may come before the address book's.
        row(ANA_LID, PushName="Ana ☀️"),
        row(ANA, FullName="Ana Souza", FirstName="Ana"),
        row(BRUNO, FullName="Bruno Lima", FirstName="Bruno", PushName="Bruno L."),
        row(DIEGO_LID, PushName="Diego", BusinessName="Diego Autopeças"),
    )
    alternates = {
        key_of(ANA): ANA_LID,
        key_of(ANA_LID): ANA,
        key_of(DIEGO_LID): DIEGO,
    }
    assert neonize_contacts.to_contacts(rows, alternates) == [
        Contact(
            jid="4915112345678@s.whatsapp.net",
            phone="+4915112345678",
            lid="11122233344455@lid",
            push_name="Diego",
            business_name="Diego Autopeças",
        ),
        Contact(
            jid="5511988887777@s.whatsapp.net",
            phone="+5511988887777",
            lid="98765432109876@lid",
            full_name="Ana Souza",
            first_name="Ana",
            push_name="Ana ☀️",
        ),
        Contact(
            jid="5521977776666@s.whatsapp.net",
            phone="+5521977776666",
            full_name="Bruno Lima",
            first_name="Bruno",
            push_name="Bruno L.",
        ),
    ]


def test_a_lid_without_a_known_number_stays_under_its_lid() -> None:
    assert neonize_contacts.to_contacts(stored(row(CARLA_LID, PushName="Carla")), {}) == [
        Contact(jid="55544433322211@lid", lid="55544433322211@lid", push_name="Carla")
    ]


def test_the_address_books_names_win_over_the_lid_rows() -> None:
    rows = stored(row(ANA_LID, FullName="ana (lid row)"), row(ANA, FullName="Ana Souza"))
    [ana] = neonize_contacts.to_contacts(rows, {key_of(ANA_LID): ANA})
    assert ana.full_name == "Ana Souza"


def test_only_users_are_contacts() -> None:
    rows = stored(
        row(jid("120363025246125888", "g.us"), FullName="Grupo"),
        row(jid("status", "broadcast"), FullName="Status"),
        row(jid("", WA), FullName="nobody"),
        row(BRUNO, FullName="Bruno Lima"),
    )
    assert [contact.jid for contact in neonize_contacts.to_contacts(rows, {})] == [
        "5521977776666@s.whatsapp.net"
    ]
    assert [key_of(of) for of in neonize_contacts.alternates_wanted(rows)] == [key_of(BRUNO)]


def test_the_alternates_to_look_up_are_every_users_jid() -> None:
    rows = stored(row(ANA), row(CARLA_LID))
    wanted = neonize_contacts.alternates_wanted(rows)
    assert wanted == [ANA, CARLA_LID]
    # Handed back to Go as they came: every required field still set.
    assert all(pb.JID.FromString(of.SerializeToString()) == of for of in wanted)


# -- number checks ---------------------------------------------------------------------------


def answers(*items: tuple[str, Any, bool]) -> list[Any]:
    """neonize's IsOnWhatsAppResponse list, parsed as is_on_whatsapp parses Go's answer."""
    answer = pb.IsOnWhatsAppReturnFunction(
        IsOnWhatsAppResponse=[
            pb.IsOnWhatsAppResponse(Query=query, JID=of, IsIn=is_in) for query, of, is_in in items
        ]
    )
    data = answer.SerializeToString()
    return list(pb.IsOnWhatsAppReturnFunction.FromString(data).IsOnWhatsAppResponse)


def test_numbers_are_answered_in_the_order_asked() -> None:
    asked = ["+5521977776666", "+5511988887777", "+4915112345678", "+5521977776666"]
    got = answers(
        ("+4915112345678", jid("4915112345678", WA), False),
        ("+5511988887777", ANA, True),
        ("+5521977776666", BRUNO, True),
    )
    assert neonize_contacts.to_number_checks(asked, got) == [
        NumberCheck("+5521977776666", on_whatsapp=True, jid="5521977776666@s.whatsapp.net"),
        NumberCheck("+5511988887777", on_whatsapp=True, jid="5511988887777@s.whatsapp.net"),
        NumberCheck("+4915112345678", on_whatsapp=False),
        NumberCheck("+5521977776666", on_whatsapp=True, jid="5521977776666@s.whatsapp.net"),
    ]


def test_whatsapp_may_answer_another_number_than_the_one_asked() -> None:
    # A Brazilian mobile registered before the ninth digit: asked with it, known without.
    got = answers(("+5511988887777@c.us", jid("551188887777", WA), True))
    assert neonize_contacts.to_number_checks(["+5511988887777"], got) == [
        NumberCheck("+5511988887777", on_whatsapp=True, jid="551188887777@s.whatsapp.net")
    ]


def test_a_number_whatsapp_did_not_answer_is_not_on_whatsapp() -> None:
    got = answers(("+5511988887777", ANA, True))
    assert neonize_contacts.to_number_checks(["+5511988887777", "+5531966665555"], got) == [
        NumberCheck("+5511988887777", on_whatsapp=True, jid="5511988887777@s.whatsapp.net"),
        NumberCheck("+5531966665555", on_whatsapp=False),
    ]


def test_one_question_takes_its_one_answer_whatever_its_echo() -> None:
    got = answers(("", ANA, True))
    assert neonize_contacts.to_number_checks(["+5511988887777"], got) == [
        NumberCheck("+5511988887777", on_whatsapp=True, jid="5511988887777@s.whatsapp.net")
    ]


@pytest.mark.parametrize("phone", ["5511988887777", "+0511988887777", "+55 11 98888-7777", ""])
def test_only_e164_numbers_are_asked(phone: str) -> None:
    with pytest.raises(EngineError, match=r"not E\.164"):
        neonize_contacts.check_phones(["+5511988887777", phone])


def test_lookup_errors_say_whether_the_instance_is_down() -> None:
    down = neonize_contacts.check_error(KEY, "client is nil")
    assert str(down) == "acme/sales-1 could not check numbers: it is not connected (client is nil)"
    other = neonize_contacts.check_error(KEY, "info query timed out")
    assert str(other) == "acme/sales-1 could not check numbers on WhatsApp: info query timed out"


# -- the engine, offline -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine_calls(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return play("tests.test_neonize_contacts", "calls", tmp_path_factory.mktemp("calls"))


def test_the_calls_need_a_connected_instance(engine_calls: Report) -> None:
    calls = engine_calls["engine"]
    for call, doing in (
        ("download", "download media"),
        ("contacts", "list contacts"),
        ("check", "check numbers"),
    ):
        assert calls[f"{call}_not_hosted"] == {
            "type": "NotRunning",
            "message": "acme/nobody is not running on this engine; start it first",
        }
        assert calls[f"{call}_dialing"] == {
            "type": "NotConnected",
            "message": f"acme/dialing is not connected to WhatsApp yet; {doing} once it is",
        }
    assert calls["hosted_after"] == 0


def test_bad_arguments_are_refused_before_the_instance_is_looked_at(engine_calls: Report) -> None:
    calls = engine_calls["engine"]
    assert calls["bad_ref"] == {
        "type": "EngineError",
        "message": "not a media reference of the neonize engine",
    }
    assert calls["bad_phone"]["type"] == "EngineError"
    assert "'5511988887777'" in calls["bad_phone"]["message"]


def test_go_reads_the_media_handles_and_whatsmeow_answers(engine_calls: Report) -> None:
    # On a client neonize does not have, whatsmeow answers "client is nil" only once Go has
    # parsed the message and found media to download in it: every handle got that far.
    whatsmeow = engine_calls["whatsmeow"]
    for kind in ("image", "video", "audio", "document", "sticker"):
        assert whatsmeow["download"][kind] == {
            "type": "NotConnected",
            "message": "acme/bare could not download the media: it is not connected "
            "(client is nil)",
        }
    # Without media, Go says so before it ever needs a client.
    assert whatsmeow["download"]["text"] == {
        "type": "EngineError",
        "message": "acme/bare could not download the media: didn't find any attachments in message",
    }
    assert whatsmeow["check"] == {
        "type": "NotConnected",
        "message": "acme/bare could not check numbers: it is not connected (client is nil)",
    }


# -- the scenario (its own interpreter) --------------------------------------------------------


def media_refs() -> dict[str, str]:
    from zapgate.sessions import neonize_inbound

    media = {
        "image": ("imageMessage", wa.ImageMessage(mimetype="image/jpeg", **MEDIA_FILE)),
        "video": ("videoMessage", wa.VideoMessage(mimetype="video/mp4", **MEDIA_FILE)),
        "audio": ("audioMessage", wa.AudioMessage(mimetype="audio/ogg", PTT=True, **MEDIA_FILE)),
        "document": (
            "documentMessage",
            wa.DocumentMessage(mimetype="application/pdf", fileName="a.pdf", **MEDIA_FILE),
        ),
        "sticker": ("stickerMessage", wa.StickerMessage(mimetype="image/webp", **MEDIA_FILE)),
    }
    return {kind: neonize_inbound.media_ref(field, body) for kind, (field, body) in media.items()}


def whatsmeow_calls(workdir: Path) -> Report:
    """The engine's reader calls on a client neonize does not have. Run before any engine
    client exists: nothing else touches neonize's maps."""
    from tests.test_neonize_offline import outcome
    from zapgate.sessions import neonize_calls, neonize_inbound

    bare = neonize_calls.neonize_client.NewClient(str(workdir / "bare.db"), uuid="acme/bare#1")
    bare._stop_finalizer.detach()
    key = "acme/bare"
    download: Report = {}
    for kind, ref in media_refs().items():
        message = neonize_inbound.download_message(ref)
        download[kind] = outcome(lambda m=message: neonize_calls.download(bare, key, m))
    text = wa.Message(conversation="no media")
    download["text"] = outcome(lambda: neonize_calls.download(bare, key, text))
    phones = ["+5511988887777", "+5521977776666"]
    return {
        "download": download,
        "check": outcome(lambda: neonize_calls.check_numbers(bare, key, phones)),
    }


async def calls_scenario(workdir: Path) -> Report:
    from tests.test_neonize_offline import Events, FakeProxy, async_outcome, spec
    from zapgate.sessions.neonize_engine import NeonizeEngine

    report: Report = {"whatsmeow": whatsmeow_calls(workdir)}
    engine = NeonizeEngine(Events())
    ref, phones = media_refs()["image"], ["+5511988887777"]
    calls: Report = {
        "download_not_hosted": await async_outcome(engine.download_media("acme/nobody", ref)),
        "contacts_not_hosted": await async_outcome(engine.contacts("acme/nobody")),
        "check_not_hosted": await async_outcome(engine.check_numbers("acme/nobody", phones)),
        "bad_ref": await async_outcome(engine.download_media("acme/nobody", "wa1:x:y")),
        "bad_phone": await async_outcome(
            engine.check_numbers("acme/nobody", ["+5511988887777", "5511988887777"])
        ),
    }
    async with FakeProxy(hold=3.0) as slow:
        dialing = spec(workdir, "acme/dialing", slow.url("socks5"))
        await engine.start(dialing)
        await slow.reached.wait()
        calls["download_dialing"] = await async_outcome(engine.download_media(dialing.key, ref))
        calls["contacts_dialing"] = await async_outcome(engine.contacts(dialing.key))
        calls["check_dialing"] = await async_outcome(engine.check_numbers(dialing.key, phones))
        await engine.stop(dialing.key)
    calls["hosted_after"] = engine.hosted()
    report["engine"] = calls
    await engine.close()
    return report


SCENARIOS: dict[str, Scenario] = {"calls": calls_scenario}


if __name__ == "__main__":
    run_main(SCENARIOS)
