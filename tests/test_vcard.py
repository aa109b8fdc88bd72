"""The vCard built for a contact card: caller text never becomes vCard structure."""

from __future__ import annotations

import re

import pytest

from zapgate.gateway.services.messages import vcard_for

UNESCAPE = re.compile(r"\\(.)")


def parse(vcard: str) -> list[tuple[str, str]]:
    """(name with parameters, unescaped value) of each line, as a vCard reader sees them."""
    fields = []
    for line in vcard.split("\n"):
        name, _, value = line.partition(":")
        fields.append((name, UNESCAPE.sub(lambda m: "\n" if m[1] in "nN" else m[1], value)))
    return fields


@pytest.mark.parametrize(
    "name",
    [
        "Ana",
        "Ana\nTEL;type=CELL;waid=5511900000000:+5511900000000",  # an injected field
        "Ana\r\nEND:VCARD\r\nBEGIN:VCARD",
        "Silva, Ana; Dr.\\",
    ],
)
def test_the_name_stays_one_fn_value(name: str) -> None:
    vcard = vcard_for(name, "+5511912345678")
    assert parse(vcard) == [
        ("BEGIN", "VCARD"),
        ("VERSION", "3.0"),
        ("FN", name.replace("\r\n", "\n")),
        ("TEL;type=CELL;waid=5511912345678", "+5511912345678"),
        ("END", "VCARD"),
    ]


def test_an_unvalidated_phone_cannot_inject_either() -> None:
    # The simulator's injected contacts do not go through phone validation.
    vcard = vcard_for("Ana", "+55;x\nEMAIL:a@b")
    assert [name for name, _ in parse(vcard)] == [
        "BEGIN",
        "VERSION",
        "FN",
        "TEL;type=CELL;waid=55",
        "END",
    ]
