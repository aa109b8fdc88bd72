"""Template variables and spin variants."""

from __future__ import annotations

import random
import re

import pytest

from zapgate.gateway.sending.templates import TemplateError, check, render


def test_variables_and_spins_render() -> None:
    rng = random.Random(3)
    template = "{Hi|Hello|Hey} {name}, your code is {code}. {{literal}}"
    seen = {render(template, {"name": "Ana", "code": "42"}, rng) for _ in range(200)}
    assert seen == {f"{g} Ana, your code is 42. {{literal}}" for g in ("Hi", "Hello", "Hey")}


def test_plain_text_is_unchanged() -> None:
    assert render("no braces here", {}, random.Random(0)) == "no braces here"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Hello {name", "unclosed"),
        ("Hello name}", "unmatched"),
        ("{Hi||Hey}", "empty spin option"),
        ("{|Hey}", "empty spin option"),
        ("{}", "neither a variable"),
        ("{first name}", "neither a variable"),
        ("{a{b}c}", "unclosed"),
        ("Hi {missing}", "unknown template variable(s): missing"),
    ],
)
def test_malformed_templates_are_rejected(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        check(template, {"name": "x"})
