"""Conversation messages built as neonize's real waE2E protobufs, as a phone shows them:
replies (ContextInfo stanzaID, participant, quotedMessage), mentions (mentionedJID),
reactions (ReactionMessage), edits (ProtocolMessage MESSAGE_EDIT inside editedMessage) and
revokes (ProtocolMessage REVOKE); and the worker protocol carries every field."""

from __future__ import annotations

import warnings

import pytest

from tests.test_neonize_send import NOW, built, refusal
from zapgate.sessions import neonize_send, wire
from zapgate.sessions.engine import Media, MessageRef, OutgoingContent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa
    from neonize.utils.enum import ChatPresence, ChatPresenceMedia

CHAT = "5511988887777@s.whatsapp.net"
GROUP = "120363025246125888@g.us"
ME = "5511999998888@s.whatsapp.net"
RECEIVED = MessageRef("3EB0AAAA", CHAT, CHAT, from_me=False, kind="text", text="open today?")
MINE = MessageRef("3EB0BBBB", CHAT, ME, from_me=True, kind="text", text="see you")


def test_a_text_reply_with_a_mention_is_an_extended_text_with_its_context() -> None:
    content = OutgoingContent(text="@5511988887777 yes", quote=RECEIVED, mentions=(CHAT,))
    message = built(content)
    assert not message.HasField("conversation")
    text = message.extendedTextMessage
    assert text.text == "@5511988887777 yes"
    context = text.contextInfo
    assert context.stanzaID == "3EB0AAAA"
    assert context.participant == CHAT
    assert context.quotedMessage.conversation == "open today?"
    assert list(context.mentionedJID) == [CHAT]


def test_a_plain_text_stays_a_conversation() -> None:
    message = built(OutgoingContent(text="hi"))
    assert message.conversation == "hi"
    assert not message.HasField("extendedTextMessage")


@pytest.mark.parametrize(
    ("quoted_kind", "field"),
    [("image", "imageMessage"), ("video", "videoMessage"), ("document", "documentMessage")],
)
def test_a_media_reply_quoting_own_media_carries_the_context_on_the_media(
    quoted_kind: str, field: str
) -> None:
    quote = MessageRef("3EB0CCCC", CHAT, ME, from_me=True, kind=quoted_kind, text="the menu")
    image = Media(b"\x89PNG not really", "image/png", caption="@5511988887777 here")
    message = built(OutgoingContent(image=image, quote=quote, mentions=(CHAT,)))
    context = message.imageMessage.contextInfo
    assert message.imageMessage.caption == "@5511988887777 here"
    assert context.stanzaID == "3EB0CCCC"
    assert context.participant == ME
    assert getattr(context.quotedMessage, field).caption == "the menu"
    assert list(context.mentionedJID) == [CHAT]


def test_a_location_can_quote_too() -> None:
    message = built(OutgoingContent(latitude=-23.5, longitude=-46.6, quote=MINE))
    assert message.locationMessage.contextInfo.stanzaID == "3EB0BBBB"
    assert message.locationMessage.contextInfo.quotedMessage.conversation == "see you"


def test_a_reaction_names_the_message_by_its_key() -> None:
    message = built(OutgoingContent(action="reaction", target=RECEIVED, reaction_emoji="👍"))
    reaction = message.reactionMessage
    assert reaction.text == "👍"
    assert reaction.senderTimestampMS == int(NOW * 1000)
    assert (reaction.key.remoteJID, reaction.key.fromMe, reaction.key.ID) == (
        CHAT,
        False,
        "3EB0AAAA",
    )
    assert not reaction.key.HasField("participant")  # a direct chat has none
    removed = built(OutgoingContent(action="reaction", target=MINE)).reactionMessage
    assert removed.text == ""
    assert removed.HasField("text")  # an empty text removes the reaction
    assert removed.key.fromMe


def test_a_reaction_in_a_group_names_who_wrote_the_message() -> None:
    member = "5511977776666@s.whatsapp.net"
    target = MessageRef("3EB0DDDD", GROUP, member, from_me=False)
    key = built(OutgoingContent(action="reaction", target=target, reaction_emoji="🎉"))
    assert key.reactionMessage.key.participant == member
    assert key.reactionMessage.key.remoteJID == GROUP


def test_an_edit_is_a_message_edit_protocol_message_inside_edited_message() -> None:
    message = built(OutgoingContent(action="edit", target=MINE, text="see you at 6"))
    protocol = message.editedMessage.message.protocolMessage
    assert protocol.type == wa.ProtocolMessage.MESSAGE_EDIT
    assert (protocol.key.remoteJID, protocol.key.fromMe, protocol.key.ID) == (
        CHAT,
        True,
        "3EB0BBBB",
    )
    assert protocol.editedMessage.conversation == "see you at 6"
    assert protocol.timestampMS == int(NOW * 1000)


def test_a_revoke_is_a_revoke_protocol_message() -> None:
    message = built(OutgoingContent(action="revoke", target=MINE))
    protocol = message.protocolMessage
    assert protocol.type == wa.ProtocolMessage.REVOKE
    assert (protocol.key.remoteJID, protocol.key.fromMe, protocol.key.ID) == (
        CHAT,
        True,
        "3EB0BBBB",
    )


def test_edits_and_revokes_of_others_messages_and_empty_edits_are_refused() -> None:
    for content in (
        OutgoingContent(action="edit", target=RECEIVED, text="x"),
        OutgoingContent(action="revoke", target=RECEIVED),
        OutgoingContent(action="edit", target=MINE, text="  "),
        OutgoingContent(action="reaction", reaction_emoji="👍"),
    ):
        assert refusal(neonize_send.check_content, content).code == "invalid_content"


def test_a_looked_up_number_readdresses_the_target() -> None:
    content = OutgoingContent(action="revoke", target=MINE)
    moved = neonize_send.addressed(content, "551188887777@s.whatsapp.net")
    assert moved.target is not None
    assert moved.target.chat_jid == "551188887777@s.whatsapp.net"
    assert neonize_send.addressed(content, CHAT) is content


def test_presences_as_whatsmeow_sends_them() -> None:
    assert neonize_send.presence_state("composing") == (
        ChatPresence.CHAT_PRESENCE_COMPOSING,
        ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT,
    )
    assert neonize_send.presence_state("recording") == (
        ChatPresence.CHAT_PRESENCE_COMPOSING,
        ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO,
    )
    assert neonize_send.presence_state("paused")[0] == ChatPresence.CHAT_PRESENCE_PAUSED


def test_the_worker_protocol_carries_quotes_mentions_and_actions() -> None:
    for content in (
        OutgoingContent(text="@5511988887777 hi", quote=RECEIVED, mentions=(CHAT,)),
        OutgoingContent(action="reaction", target=MINE, reaction_emoji="❤️"),
        OutgoingContent(action="edit", target=MINE, text="fixed"),
        OutgoingContent(action="revoke", target=MINE),
    ):
        proto = wire.content_to_proto(content)
        assert wire.content_from_proto(type(proto).FromString(proto.SerializeToString())) == content
