"""The engine boundary: what a worker process asks of WhatsApp, whichever engine runs it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zapgate.sessions.events import EngineEvent, InstanceKey
from zapgate.sessions.groups import GroupInfo, JoinRequest, ParticipantOutcome

# Called on the worker's event loop thread. Engines whose library calls back on other
# threads (neonize calls back from Go) must hop to the loop first.
EventSink = Callable[[EngineEvent], None]


@dataclass(frozen=True)
class InstanceSpec:
    key: InstanceKey
    # Private directory (0700, on tmpfs) holding the instance's plaintext session store.
    runtime_dir: Path
    # e.g. socks5://user:pass@host:1080 or http://host:3128; empty for a direct connection.
    proxy_url: str = ""

    @property
    def store_path(self) -> Path:
        return self.runtime_dir / STORE_FILE_NAME


STORE_FILE_NAME = "session.db"
# Messages carry media up to 16 MiB (MessageService's cap); gRPC's default limit is 4 MiB.
MAX_GRPC_MESSAGE_BYTES = 20 * 1024 * 1024
GRPC_MESSAGE_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
)


@dataclass(frozen=True)
class Media:
    data: bytes
    mime_type: str
    file_name: str = ""
    caption: str = ""


@dataclass(frozen=True)
class MessageRef:
    """A message of one of the instance's chats, as a reply quotes it or a reaction, edit or
    revoke names it. The core fills every field (its own sends and the messages it received
    are in its store); engines build WhatsApp's ContextInfo or MessageKey from it."""

    message_id: str  # WhatsApp's id
    chat_jid: str
    sender_jid: str  # who wrote it (the instance's own JID when from_me), without a device
    from_me: bool = False
    kind: str = "text"  # text, image, video, audio, voice_note, document, location, contact
    text: str = ""  # its text or caption (or location or contact name), shown in a quote


ACTIONS = ("reaction", "edit", "revoke")


@dataclass(frozen=True)
class OutgoingContent:
    """Exactly one kind is set; text already has templates and spins applied.

    Any kind may quote a message (`quote`); text and captions may mention people (`mentions`,
    JIDs, each written as @<digits> in the text). With `action` set the content acts on
    `target` instead: a reaction (`reaction_emoji`, empty removes it), an edit (the new
    `text`) or a revoke (delete for everyone)."""

    text: str = ""
    image: Media | None = None
    video: Media | None = None
    audio: Media | None = None
    voice_note: bool = False  # with audio: a push-to-talk voice note (ogg/opus)
    document: Media | None = None
    latitude: float | None = None
    longitude: float | None = None
    location_name: str = ""
    location_address: str = ""
    contact_name: str = ""
    contact_vcard: str = ""
    quote: MessageRef | None = None
    mentions: tuple[str, ...] = ()
    action: str = ""  # "", or one of ACTIONS
    target: MessageRef | None = None
    reaction_emoji: str = ""
    # A poll: 2-12 distinct options; how many a voter may choose (0: any number).
    poll_question: str = ""
    poll_options: tuple[str, ...] = ()
    poll_selectable: int = 0
    sticker: Media | None = None  # WebP
    view_once: bool = False  # with image, video or a voice note
    # With text: a link preview from the caller's data (engines never fetch URLs).
    link_url: str = ""
    link_title: str = ""
    link_description: str = ""
    link_thumbnail: bytes = b""  # JPEG or PNG, shrunk to a small JPEG when built

    @property
    def kind(self) -> str:
        if self.action:
            return self.action
        if self.poll_options:
            return "poll"
        for kind in ("image", "video", "audio", "document", "sticker"):
            if getattr(self, kind) is not None:
                return kind
        if self.latitude is not None:
            return "location"
        if self.contact_vcard:
            return "contact"
        return "text"


@dataclass(frozen=True)
class PairCode:
    code: str  # what the user types on the phone
    lifetime_seconds: float  # how long the phone has to enter it


@dataclass(frozen=True)
class SendResult:
    message_id: str  # WhatsApp's id of the sent message (receipts name it)
    timestamp: float  # epoch seconds, as the server acknowledged it


@dataclass(frozen=True)
class Contact:
    """One entry of the linked phone's contacts (whatsmeow's contact store, push names from
    history sync and messages)."""

    jid: str  # phone-number JID
    phone: str = ""  # E.164
    lid: str = ""
    full_name: str = ""
    first_name: str = ""
    push_name: str = ""
    business_name: str = ""


@dataclass(frozen=True)
class NumberCheck:
    """Whether `phone` (E.164, as asked) has a WhatsApp account, and its JID if so."""

    phone: str
    on_whatsapp: bool
    jid: str = ""


class Engine(ABC):
    """One engine inside a worker, hosting many instances. All methods are called on the
    worker's event loop; none may block it. Outcomes are reported through `sink`."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    @abstractmethod
    async def start(self, spec: InstanceSpec) -> None:
        """Begins connecting. A paired store reconnects; an empty one starts QR pairing
        (QrShown events). Returns once started; outcomes arrive as events. Starting a started
        instance does nothing."""

    @abstractmethod
    async def stop(self, key: InstanceKey) -> None:
        """Disconnects and forgets the instance; its store stays. Idempotent."""

    @abstractmethod
    async def logout(self, key: InstanceKey) -> None:
        """Unlinks the device from the account (when connected) and wipes the store."""

    @abstractmethod
    async def pair_phone(self, key: InstanceKey, phone: str) -> PairCode:
        """Requests a pair code for `phone` (E.164). Only valid after the first QrShown."""

    @abstractmethod
    async def send(
        self, key: InstanceKey, recipient_jid: str, content: OutgoingContent
    ) -> SendResult:
        """Sends one message now. Raises SendRefused for a refusal that concerns this message
        (the instance is fine), EngineError when the instance cannot send at all."""

    @abstractmethod
    async def set_typing(self, key: InstanceKey, recipient_jid: str, typing: bool) -> None:
        """Shows (or stops showing) "typing..." in the chat with `recipient_jid`."""

    @abstractmethod
    async def mark_read(
        self, key: InstanceKey, chat_jid: str, sender_jid: str, message_ids: list[str]
    ) -> None:
        """Sends read receipts for received messages of one chat (`sender_jid`: who wrote
        them, in a group; empty in a direct chat)."""

    @abstractmethod
    async def send_presence(self, key: InstanceKey, chat_jid: str, presence: str) -> None:
        """Shows `composing`, `recording` or `paused` in a chat; or sets the account's own
        presence, `available` or `unavailable` (`chat_jid` empty); or, with `subscribe`, asks
        for the presence of the contact `chat_jid` (PresenceChanged events follow)."""

    @abstractmethod
    async def reject_call(self, key: InstanceKey, caller_jid: str, call_id: str) -> None:
        """Declines an incoming call (`caller_jid`: CallReceived.from_jid)."""

    @abstractmethod
    async def download_media(self, key: InstanceKey, media_ref: str) -> bytes:
        """The decrypted bytes of received media (`MessageReceived.media_ref`). Raises
        EngineError when they are gone from WhatsApp's servers or cannot be decrypted."""

    @abstractmethod
    async def contacts(self, key: InstanceKey) -> list[Contact]:
        """Every contact the connected instance knows, deduplicated by JID."""

    @abstractmethod
    async def check_numbers(self, key: InstanceKey, phones: list[str]) -> list[NumberCheck]:
        """For each E.164 number, whether it is on WhatsApp (one query to WhatsApp)."""

    # Groups (sessions/groups.py). A change the account may not make raises NotAdmin; a group
    # it is not in (or an invite that leads nowhere) GroupNotFound. Phones are E.164.

    @abstractmethod
    async def list_groups(self, key: InstanceKey) -> list[GroupInfo]:
        """Every group the account is in, with its participants."""

    @abstractmethod
    async def group_info(self, key: InstanceKey, group_jid: str) -> GroupInfo:
        """One group the account is in."""

    @abstractmethod
    async def create_group(
        self, key: InstanceKey, name: str, phones: list[str]
    ) -> tuple[GroupInfo, list[ParticipantOutcome]]:
        """Creates a group with the account as super admin; one outcome per phone."""

    @abstractmethod
    async def update_participants(
        self, key: InstanceKey, group_jid: str, action: str, phones: list[str]
    ) -> list[ParticipantOutcome]:
        """Adds, removes, promotes or demotes (`action`, groups.ACTIONS); one outcome per
        phone."""

    @abstractmethod
    async def set_group_name(self, key: InstanceKey, group_jid: str, name: str) -> None: ...

    @abstractmethod
    async def set_group_topic(self, key: InstanceKey, group_jid: str, topic: str) -> None: ...

    @abstractmethod
    async def set_group_settings(
        self, key: InstanceKey, group_jid: str, announce: bool | None, locked: bool | None
    ) -> None:
        """Changes the settings given (None: leave as is)."""

    @abstractmethod
    async def set_group_photo(self, key: InstanceKey, group_jid: str, data: bytes) -> str:
        """Sets the group's picture (`data`: a JPEG); WhatsApp's id of the new picture."""

    @abstractmethod
    async def join_requests(self, key: InstanceKey, group_jid: str) -> list[JoinRequest]:
        """Who waits for an admin's approval to join, oldest first (admins only)."""

    @abstractmethod
    async def invite_link(self, key: InstanceKey, group_jid: str, revoke: bool) -> str:
        """The group's invite link (a new one with `revoke`)."""

    @abstractmethod
    async def preview_invite(self, key: InstanceKey, code: str) -> GroupInfo:
        """The group an invite code leads to, without joining."""

    @abstractmethod
    async def join_group(self, key: InstanceKey, code: str) -> str:
        """Joins by invite code; the group's JID."""

    @abstractmethod
    async def leave_group(self, key: InstanceKey, group_jid: str) -> None: ...

    @abstractmethod
    async def resolve_jids(self, key: InstanceKey, jids: list[str]) -> list[str]:
        """Each JID's other identity (a phone-number JID's LID, a LID's phone-number JID)
        from what the engine has learned, "" where it knows none. Asks nothing of WhatsApp."""

    @abstractmethod
    def hosted(self) -> int:
        """How many instances this engine hosts now."""

    @abstractmethod
    async def close(self) -> None:
        """Stops every instance (stores stay); the worker exits after this."""
