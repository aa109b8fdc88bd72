"""What SendMessage checks of the richer kinds: polls, stickers and link previews. Each
violation names its field; nothing here touches the store or the engine."""

from __future__ import annotations

from typing import Any

from zapgate.gateway.rpc.errors import FieldViolation
from zapgate.gateway.rpc.validation import check_text
from zapgate.v1 import message_pb2 as pb

MAX_STICKER_BYTES = 1024 * 1024  # WhatsApp's apps refuse bigger stickers
MAX_THUMBNAIL_BYTES = 1024 * 1024


def check_sticker(sticker: pb.Media, violations: list[FieldViolation]) -> None:
    data = sticker.data
    if data and not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        violations.append(FieldViolation("sticker.data", "must be a WebP image"))
    if len(data) > MAX_STICKER_BYTES:
        violations.append(FieldViolation("sticker.data", f"at most {MAX_STICKER_BYTES} bytes"))
    if sticker.mime_type and sticker.mime_type != "image/webp":
        violations.append(FieldViolation("sticker.mime_type", "must be image/webp"))
    for field in ("caption", "file_name"):
        if getattr(sticker, field):
            violations.append(FieldViolation(f"sticker.{field}", "a sticker has none"))


MAX_LINK_TITLE_CHARS = 300
MAX_LINK_DESCRIPTION_CHARS = 1000
MAX_URL_CHARS = 2048
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def link_preview(
    request: pb.SendMessageRequest, kind: str, violations: list[FieldViolation]
) -> dict[str, Any]:
    """A text's link preview, from the caller's data only: zapgate never fetches URLs."""
    preview = request.link_preview
    if kind != "text":
        violations.append(FieldViolation("link_preview", "only a text can have one"))
    url = preview.url
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        violations.append(FieldViolation("link_preview.url", "must be an http(s) URL"))
    elif url not in request.text.body:
        violations.append(FieldViolation("link_preview.url", "must appear in the text"))
    violations += check_text("link_preview.url", url, MAX_URL_CHARS)
    violations += check_text("link_preview.title", preview.title, MAX_LINK_TITLE_CHARS)
    violations += check_text(
        "link_preview.description", preview.description, MAX_LINK_DESCRIPTION_CHARS
    )
    thumbnail = preview.thumbnail
    if thumbnail and not thumbnail.startswith(_IMAGE_MAGIC):
        violations.append(FieldViolation("link_preview.thumbnail", "must be a JPEG or PNG"))
    if len(thumbnail) > MAX_THUMBNAIL_BYTES:
        violations.append(
            FieldViolation("link_preview.thumbnail", f"at most {MAX_THUMBNAIL_BYTES} bytes")
        )
    return {
        "link_url": url,
        "link_title": preview.title,
        "link_description": preview.description,
    }


MIN_POLL_OPTIONS, MAX_POLL_OPTIONS = 2, 12  # WhatsApp's apps allow 2 to 12
MAX_POLL_QUESTION_CHARS = 255
MAX_POLL_OPTION_CHARS = 100


def poll_content(poll: pb.Poll, violations: list[FieldViolation]) -> dict[str, Any]:
    """A poll's stored content. Options must be distinct: a vote names its options by the
    SHA-256 of their names, so two equal names could not be told apart."""
    if not poll.question.strip():
        violations.append(FieldViolation("poll.question", "required"))
    violations += check_text("poll.question", poll.question, MAX_POLL_QUESTION_CHARS)
    options = list(poll.options)
    if not MIN_POLL_OPTIONS <= len(options) <= MAX_POLL_OPTIONS:
        violations.append(
            FieldViolation(
                "poll.options",
                f"give {MIN_POLL_OPTIONS} to {MAX_POLL_OPTIONS} options, not {len(options)}",
            )
        )
    for n, option in enumerate(options[:MAX_POLL_OPTIONS]):
        field = f"poll.options[{n}]"
        if not option.strip():
            violations.append(FieldViolation(field, "required"))
        elif option in options[:n]:
            violations.append(FieldViolation(field, f"repeats option {options.index(option)}"))
        violations += check_text(field, option, MAX_POLL_OPTION_CHARS)
    if not 0 <= poll.selectable_count <= len(options):
        violations.append(
            FieldViolation(
                "poll.selectable_count",
                f"must be 0 (any number) to the number of options ({len(options)})",
            )
        )
    return {
        "poll_question": poll.question,
        "poll_options": options,
        "poll_selectable": poll.selectable_count,
    }
