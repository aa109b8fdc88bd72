"""What engines report, as zapgate's own types. Engines (neonize or simulator) translate
their library's events into these; nothing past the engine boundary sees neonize objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

InstanceKey = str  # "<tenant>/<instance id>": unique across tenants


@dataclass(frozen=True)
class QrShown:
    """A QR code to display. `index` counts from 0; whatsmeow shows six codes, the first for
    60 s and each next one for 20 s."""

    key: InstanceKey
    code: str
    index: int
    lifetime_seconds: float


@dataclass(frozen=True)
class PairCodeShown:
    """An 8-character code the user types on the phone (Linked devices > Link with phone)."""

    key: InstanceKey
    code: str
    lifetime_seconds: float


@dataclass(frozen=True)
class QrTimedOut:
    """Every QR code expired unscanned. The engine has stopped the instance."""

    key: InstanceKey


@dataclass(frozen=True)
class Paired:
    """The phone accepted the link. `jid` is the new device's JID, `phone` its E.164 number."""

    key: InstanceKey
    jid: str
    phone: str


@dataclass(frozen=True)
class Connected:
    key: InstanceKey
    jid: str
    phone: str


@dataclass(frozen=True)
class Disconnected:
    """The connection dropped (network, server restart request 515, 503...). The session is
    intact; zapgate reconnects with backoff. The engine has stopped the instance."""

    key: InstanceKey
    detail: str = ""


@dataclass(frozen=True)
class ConnectFailed:
    """Connecting failed before a connection existed (DNS, refused, TLS...). whatsmeow does
    not retry these; zapgate does. The engine has stopped the instance."""

    key: InstanceKey
    detail: str


@dataclass(frozen=True)
class ConnectRefused:
    """WhatsApp answered the connect with a failure code (whatsmeow's ConnectFailure):
    401/403/406 logged out or banned for good, 402 temporary ban, 405 client outdated,
    5xx server trouble."""

    key: InstanceKey
    code: int
    detail: str = ""


@dataclass(frozen=True)
class LoggedOut:
    """The device was removed (on the phone, or by WhatsApp). The store has been wiped."""

    key: InstanceKey
    detail: str = ""


@dataclass(frozen=True)
class StreamReplaced:
    """Another client connected with this session. Never reconnect automatically: two clients
    would take the stream from each other forever."""

    key: InstanceKey


@dataclass(frozen=True)
class TemporarilyBanned:
    """WhatsApp's temporary ban: `code` (101 too many people without you saved, 102 blocked
    by too many, 103 too many groups, 104 same message to too many, 106 broadcast lists) and
    the seconds until it expires."""

    key: InstanceKey
    code: int
    expires_in_seconds: float


@dataclass(frozen=True)
class ClientOutdated:
    key: InstanceKey


@dataclass(frozen=True)
class KeepAliveFailing:
    """Keepalive pings are failing (`failures` in a row); the connection may be dead."""

    key: InstanceKey
    failures: int


@dataclass(frozen=True)
class KeepAliveRestored:
    key: InstanceKey


@dataclass(frozen=True)
class Receipt:
    """The recipient's phone acknowledged sent messages: `kind` is "delivered", "read" or
    "played" (voice notes); `message_ids` are WhatsApp message ids returned by `send`."""

    key: InstanceKey
    message_ids: tuple[str, ...]
    kind: str
    chat: str = ""
    # Who acknowledged them (the recipient; in a group, one participant): phone-number JID
    # and LID, where the engine knows them.
    from_jid: str = ""
    from_lid: str = ""


@dataclass(frozen=True)
class ReadElsewhere:
    """The account read messages others wrote in `chat` on another of its devices (the
    phone, WhatsApp Web): WhatsApp tells every device of the account."""

    key: InstanceKey
    chat: str  # phone-number JID where known (else the LID), or the group's JID
    message_ids: tuple[str, ...]
    timestamp: float = 0.0  # epoch seconds, when they were read


@dataclass(frozen=True)
class MessageReceived:
    """A message arrived in one of the instance's chats (or was sent from the linked phone
    itself: `from_me`). Flat on purpose: it crosses the worker socket as JSON.

    `kind` is one of text, image, video, audio, voice_note, document, sticker, location,
    contact, poll, poll_vote, reaction, edit, revoke, ephemeral_setting, unknown. A poll's
    question is `text`; a poll vote names its poll in `target_message_id` and carries the
    chosen options as WhatsApp does, hashed (`poll_votes`): the core knows the poll's option
    names. `text` is the body, or the caption of media, or an edit's new text; an edit or a
    revoke names the message it acts on in `target_message_id`. An ephemeral_setting is the
    sender switching the chat's disappearing messages (`ephemeral_seconds`, 0: off). Media
    bytes stay on WhatsApp's servers until downloaded: `media_ref` is the engine's opaque
    handle for `Engine.download_media` and never leaves the core."""

    key: InstanceKey
    message_id: str
    chat_jid: str
    sender_jid: str  # phone-number JID (...@s.whatsapp.net) where known
    sender_lid: str = ""  # LID (...@lid) where known
    push_name: str = ""
    from_me: bool = False
    group_jid: str = ""  # the group's JID when the chat is a group
    timestamp: float = 0.0  # epoch seconds, as WhatsApp stamped it
    kind: str = "text"
    text: str = ""
    media_mime_type: str = ""
    media_file_name: str = ""
    media_size: int = 0
    media_sha256: str = ""  # hex, of the plaintext file
    media_seconds: int = 0  # audio and video length
    media_ref: str = ""
    latitude: float = 0.0
    longitude: float = 0.0
    location_name: str = ""
    location_address: str = ""
    contact_name: str = ""
    contact_vcard: str = ""
    reaction_emoji: str = ""  # empty: the reaction was removed
    reacted_message_id: str = ""
    quoted_message_id: str = ""  # the message this one replies to
    quoted_sender_jid: str = ""
    target_message_id: str = ""  # edit, revoke, poll_vote: the message acted on
    poll_options: tuple[str, ...] = ()  # poll
    poll_selectable: int = 0  # poll: how many a voter may choose (0: any number)
    poll_votes: tuple[str, ...] = ()  # poll_vote: hex SHA-256 of each chosen option's name
    view_once: bool = False  # media the recipient may open once
    ephemeral_seconds: int = 0  # ephemeral_setting: the chat's new timer (0: off)


def poll_option_sha256(option: str) -> str:
    """How a poll vote names an option: the hex SHA-256 of its name (whatsmeow's
    HashPollOptions)."""
    return hashlib.sha256(option.encode()).hexdigest()


GROUP_CHANGES = (
    "added",  # participants added (or joined by link); `participants` says who
    "removed",  # participants removed (or left)
    "promoted",
    "demoted",
    "name",
    "topic",
    "settings",  # announce and/or locked changed (None: unchanged)
    "joined",  # this account was added to the group (or created or joined it)
    "left",  # this account was removed from the group (or left it)
    "ephemeral",  # the disappearing-messages timer changed: `ephemeral_seconds` (0: off)
)


@dataclass(frozen=True)
class GroupChanged:
    """Something changed in a group of the instance (one of GROUP_CHANGES), done by
    `actor_jid` (empty when WhatsApp does not say)."""

    key: InstanceKey
    group_jid: str
    change: str
    actor_jid: str = ""
    participants: tuple[str, ...] = ()  # JIDs
    name: str = ""
    topic: str = ""
    announce: bool | None = None
    locked: bool | None = None
    timestamp: float = 0.0  # epoch seconds
    ephemeral_seconds: int = 0


@dataclass(frozen=True)
class PresenceChanged:
    """A contact the instance subscribed to came online or went offline (`last_seen`: epoch
    seconds, 0 when unknown or hidden)."""

    key: InstanceKey
    jid: str  # phone-number JID where known (else the LID)
    lid: str = ""
    available: bool = False
    last_seen: float = 0.0


@dataclass(frozen=True)
class ChatPresenceChanged:
    """Someone types (`composing`), records a voice note (`recording`) or stopped (`paused`)
    in a chat."""

    key: InstanceKey
    chat_jid: str
    sender_jid: str  # phone-number JID where known (else the LID)
    sender_lid: str = ""
    presence: str = "paused"


@dataclass(frozen=True)
class CallReceived:
    """Someone calls the account (a call offer). The core decides whether to reject it."""

    key: InstanceKey
    call_id: str
    caller_jid: str  # phone-number JID where known (else the LID); what a reject names
    caller_lid: str = ""
    timestamp: float = 0.0  # epoch seconds
    from_jid: str = ""  # the caller exactly as the offer named it: what a rejection names


@dataclass(frozen=True)
class HistoryMessage:
    """A message of a chat's past, as a history sync carries it (kinds as MessageReceived's;
    edits, reactions and deletions come applied or not at all)."""

    message_id: str
    chat_jid: str
    sender_jid: str
    from_me: bool
    kind: str
    timestamp: float  # epoch seconds
    text: str = ""
    push_name: str = ""
    media_mime_type: str = ""
    media_file_name: str = ""
    media_size: int = 0
    media_ref: str = ""  # the engine's handle for DownloadMedia (as MessageReceived's)


@dataclass(frozen=True)
class HistoryChat:
    """A chat as a history sync describes it."""

    jid: str
    name: str = ""
    unread: int = 0
    archived: bool = False
    pinned: bool = False
    muted_until: float = 0.0  # epoch seconds; 0: not muted


@dataclass(frozen=True)
class HistorySynced:
    """One blob of the history WhatsApp sends a newly linked device (whatsmeow's
    HistorySync event): some chats and their messages. `progress` is WhatsApp's percentage
    of the whole transfer; `final` marks the last blob."""

    key: InstanceKey
    sync_type: str  # initial_bootstrap, recent, full, push_name, on_demand, ...
    chunk_order: int
    progress: int
    final: bool
    chats: tuple[HistoryChat, ...] = ()
    messages: tuple[HistoryMessage, ...] = ()


EngineEvent = (
    QrShown
    | PairCodeShown
    | QrTimedOut
    | Paired
    | Connected
    | Disconnected
    | ConnectFailed
    | ConnectRefused
    | LoggedOut
    | StreamReplaced
    | TemporarilyBanned
    | ClientOutdated
    | KeepAliveFailing
    | KeepAliveRestored
    | Receipt
    | ReadElsewhere
    | MessageReceived
    | GroupChanged
    | PresenceChanged
    | ChatPresenceChanged
    | CallReceived
    | HistorySynced
)
