"""Message templates: `{name}` variables filled from a map, `{Hi|Hello|Hey}` spin variants
picked at send time (so bulk sends do not carry identical bodies, a known ban trigger), and
`{{` / `}}` for literal braces. Checked when a message is accepted; rendered when it goes."""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class _Literal:
    text: str


@dataclass(frozen=True)
class _Variable:
    name: str


@dataclass(frozen=True)
class _Spin:
    options: tuple[str, ...]


Part = _Literal | _Variable | _Spin


# One token at a time: escaped braces, a placeholder, a run of text, or a stray brace.
TOKEN = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[^{}]+|[{}]")


@functools.lru_cache(maxsize=4096)  # campaigns send the same few templates again and again
def parse(template: str) -> tuple[Part, ...]:
    """Raises TemplateError (with the position) on malformed syntax."""
    parts: list[Part] = []
    literal: list[str] = []
    for match in TOKEN.finditer(template):
        piece, position = match.group(), match.start()
        if piece in ("{{", "}}"):
            literal.append(piece[0])
        elif piece == "}":
            raise TemplateError(f"unmatched '}}' at position {position}")
        elif piece == "{":
            raise TemplateError(f"unclosed '{{' at position {position}")
        elif piece[0] == "{":
            parts += [_Literal("".join(literal))] if literal else []
            literal = []
            parts.append(_placeholder(piece[1:-1], position))
        else:
            literal.append(piece)
    if literal:
        parts.append(_Literal("".join(literal)))
    return tuple(parts)


def _placeholder(inner: str, position: int) -> Part:
    if "|" in inner:
        options = tuple(inner.split("|"))
        if any(not option for option in options):
            raise TemplateError(f"empty spin option in '{{{inner}}}' at position {position}")
        return _Spin(options)
    if not VARIABLE.fullmatch(inner):
        raise TemplateError(
            f"'{{{inner}}}' at position {position} is neither a variable nor "
            "a spin like {Hi|Hello}"
        )
    return _Variable(inner)


def check(template: str, variables: Mapping[str, str]) -> None:
    """Raises TemplateError for malformed syntax or a variable missing from `variables`."""
    missing = sorted(_variable_names(template) - variables.keys())
    if missing:
        raise TemplateError(f"unknown template variable(s): {', '.join(missing)}")


@functools.lru_cache(maxsize=1024)
def _variable_names(template: str) -> frozenset[str]:
    return frozenset(p.name for p in parse(template) if isinstance(p, _Variable))


def render(template: str, variables: Mapping[str, str], rng: random.Random) -> str:
    out = []
    for part in parse(template):
        if isinstance(part, _Literal):
            out.append(part.text)
        elif isinstance(part, _Variable):
            out.append(variables[part.name])
        else:
            out.append(rng.choice(part.options))
    return "".join(out)
