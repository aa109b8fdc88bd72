"""Polls with the real neonize library, offline: a poll is built by neonize's own
build_poll_vote_creation (whatsmeow's BuildPollCreation, with its message secret) and reaches
Go intact; polls and votes WhatsApp delivers map to zapgate's events (a vote's decrypted
options as their SHA-256, which the core names); the worker protocol carries every poll
field."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import Report, Scenario, play, run_main
from tests.test_neonize_conversation import RECEIVED
from tests.test_neonize_inbound import KEY, event
from tests.test_neonize_send import refusal
from zapgate.sessions import neonize_inbound, neonize_send, wire
from zapgate.sessions.engine import OutgoingContent
from zapgate.sessions.events import poll_option_sha256

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto.waCommon import WACommon_pb2 as wa_common
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa

POLL = OutgoingContent(
    poll_question="Lunch?", poll_options=("pizza", "sushi", "tacos"), poll_selectable=2
)


def poll_fields(message: Any) -> Report:
    poll = message.pollCreationMessage
    return {
        "name": poll.name,
        "options": [o.optionName for o in poll.options],
        "selectable": poll.selectableOptionsCount,
        "secret_bytes": len(message.messageContextInfo.messageSecret),
        "stanza": poll.contextInfo.stanzaID,
        "participant": poll.contextInfo.participant,
        "quoted": poll.contextInfo.quotedMessage.conversation,
    }


async def build_scenario(workdir: Path) -> Report:
    """neonize's client builds the polls (a Go call; no connection, no network)."""
    import dataclasses

    from zapgate.sessions import neonize_calls

    client = neonize_calls.neonize_client.NewClient(str(workdir / "polls.db"), uuid="acme/p#1")
    client._stop_finalizer.detach()
    report: Report = {}
    cases = {
        "multiple": POLL,
        "single": dataclasses.replace(POLL, poll_selectable=1),
        "any": dataclasses.replace(POLL, poll_selectable=0),
        "reply": dataclasses.replace(POLL, quote=RECEIVED),
    }
    secrets = set()
    for name, content in cases.items():
        message = neonize_send.build_poll(client, content)
        # As Go receives it from send_message: serialized, then parsed.
        message = wa.Message.FromString(message.SerializeToString())
        report[name] = poll_fields(message)
        secrets.add(bytes(message.messageContextInfo.messageSecret))
    report["distinct_secrets"] = len(secrets)
    return report


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return play("tests.test_neonize_polls", "build", tmp_path_factory.mktemp("polls"))


def test_neonize_builds_the_poll_with_its_secret_and_count(built: Report) -> None:
    assert built["multiple"] == {
        "name": "Lunch?",
        "options": ["pizza", "sushi", "tacos"],
        "selectable": 2,
        "secret_bytes": 32,  # votes are encrypted with it
        "stanza": "",
        "participant": "",
        "quoted": "",
    }
    assert built["single"]["selectable"] == 1
    assert built["any"]["selectable"] == 0
    assert built["distinct_secrets"] == 4  # a fresh secret for every poll


def test_a_poll_reply_carries_the_quote_on_the_poll(built: Report) -> None:
    reply = built["reply"]
    assert reply["stanza"] == RECEIVED.message_id
    assert reply["participant"] == RECEIVED.sender_jid
    assert reply["quoted"] == RECEIVED.text


@pytest.mark.parametrize(
    "content",
    [
        OutgoingContent(poll_question="Q", poll_options=("only",)),
        OutgoingContent(poll_question="Q", poll_options=tuple(f"o{n}" for n in range(13))),
        OutgoingContent(poll_question=" ", poll_options=("a", "b")),
        OutgoingContent(poll_question="Q", poll_options=("a", "a")),
        OutgoingContent(poll_question="Q", poll_options=("a", "b"), poll_selectable=3),
    ],
)
def test_a_poll_whatsapp_cannot_show_is_refused_before_any_go_call(
    content: OutgoingContent,
) -> None:
    refused = refusal(neonize_send.build_poll, None, content)  # no client is touched
    assert refused.code == "invalid_content"


def test_a_poll_is_not_built_without_neonize() -> None:
    with pytest.raises(ValueError, match="build_poll"):
        neonize_send.build_message(POLL)


@pytest.mark.parametrize("field", ["pollCreationMessage", "pollCreationMessageV3"])
def test_a_received_poll_maps_its_question_options_and_count(field: str) -> None:
    poll = wa.PollCreationMessage(
        name="Which day?",
        options=[wa.PollCreationMessage.Option(optionName=o) for o in ("mon", "tue")],
        selectableOptionsCount=1,
    )
    message = wa.Message(**{field: poll})
    message.messageContextInfo.messageSecret = b"\x01" * 32
    received = neonize_inbound.to_message_received(KEY, event(message))
    assert received is not None
    assert (received.kind, received.text) == ("poll", "Which day?")
    assert received.poll_options == ("mon", "tue")
    assert received.poll_selectable == 1


def test_a_vote_names_its_poll_and_waits_for_decryption() -> None:
    update = wa.PollUpdateMessage(
        pollCreationMessageKey=wa_common.MessageKey(
            remoteJID="5511988887777@s.whatsapp.net", fromMe=True, ID="3EB0POLL"
        ),
        vote=wa.PollEncValue(encPayload=b"\x00" * 32, encIV=b"\x00" * 12),
        senderTimestampMS=1_790_000_123_000,
    )
    received = neonize_inbound.to_message_received(KEY, event(wa.Message(pollUpdateMessage=update)))
    assert received is not None
    assert received.kind == "poll_vote"
    assert received.target_message_id == "3EB0POLL"
    assert received.poll_votes == ()  # the engine decrypts it with the live client


def test_a_decrypted_vote_is_the_sha256_of_the_options_chosen() -> None:
    chosen = [hashlib.sha256(o.encode()).digest() for o in ("tacos", "pizza")]
    vote = wa.PollVoteMessage(selectedOptions=chosen)
    assert neonize_inbound.poll_votes(vote) == (
        poll_option_sha256("tacos"),
        poll_option_sha256("pizza"),
    )
    assert neonize_inbound.poll_votes(wa.PollVoteMessage()) == ()  # a withdrawn vote


def test_the_worker_protocol_carries_every_poll_field() -> None:
    assert wire.content_from_proto(wire.content_to_proto(POLL)) == POLL
    assert POLL.kind == "poll"


SCENARIOS: dict[str, Scenario] = {"build": build_scenario}


if __name__ == "__main__":
    run_main(SCENARIOS)
