"""Tables of the state store. Times are integer microseconds since the epoch (UTC): exact,
and the same on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(128), nullable=False),
    sa.Column("phone", sa.String(16), nullable=False, server_default=""),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("create_time_us", sa.BigInteger, nullable=False),
    sa.Column("update_time_us", sa.BigInteger, nullable=False),
    # Connection state, owned by the supervisor.
    sa.Column("state_reason", sa.SmallInteger, nullable=False, server_default="1"),
    sa.Column("state_detail", sa.String(500), nullable=False, server_default=""),
    sa.Column("state_change_time_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("jid", sa.String(100), nullable=False, server_default=""),
    sa.Column("ban_code", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ban_expire_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("keepalive_failing", sa.Boolean, nullable=False, server_default=sa.false()),
    # Whether the instance should be kept connected (reconnected after drops and restarts).
    sa.Column("want_connected", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("proxy_url", sa.String(500), nullable=False, server_default=""),
    # Generation of the newest encrypted session snapshot (0: none yet).
    sa.Column("session_generation", sa.BigInteger, nullable=False, server_default="0"),
    # The send policy (JSON of ratelimit.SendPolicy fields; NULL = defaults), a manual or
    # automatic pause, and the scheduler's counters (so caps survive restarts).
    sa.Column("send_policy", sa.JSON, nullable=True),
    sa.Column("sending_paused_reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("scheduler_state", sa.JSON, nullable=True),
    # Incoming calls: reject them, and the text answering the caller (migration 0015).
    sa.Column("call_settings", sa.JSON, nullable=True),
    sa.Index("ix_instances_tenant_state_id", "tenant", "state", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    # SHA-256 of the key's secret part; the key itself is never stored.
    sa.Column("secret_sha256", sa.LargeBinary(32), nullable=False),
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("create_time_us", sa.BigInteger, nullable=False),
    sa.Column("revoke_time_us", sa.BigInteger, nullable=True),
    # viewer, sender, operator or admin (gateway/rpc/roles.py); keys made before roles
    # existed are admin.
    sa.Column("role", sa.String(16), nullable=False, server_default="admin"),
    # The instance ids the key reaches, space-separated and sorted; empty: the whole tenant.
    sa.Column("instance_scope", sa.Text, nullable=False, server_default=""),
)

# The newest encrypted snapshot of each instance's session store (see sessions/vault.py).
session_snapshots = sa.Table(
    "session_snapshots",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("create_time_us", sa.BigInteger, nullable=False),
)

# The durable outbox: a message is committed here before SendMessage returns.
messages = sa.Table(
    "messages",
    metadata,
    # Enqueue order; the scheduler keeps it within a priority and always within a chat.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("recipient_jid", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("content", sa.JSON, nullable=False),  # text (templates applied) and metadata
    sa.Column("media", sa.LargeBinary, nullable=True),
    sa.Column("state", sa.SmallInteger, nullable=False),
    # A stable code (docs/messages.md) and, apart, the words for a person.
    sa.Column("failure_reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("failure_detail", sa.String(500), nullable=False, server_default=""),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("whatsapp_message_id", sa.String(100), nullable=False, server_default=""),
    sa.Column("send_at_us", sa.BigInteger, nullable=False),
    sa.Column("expire_us", sa.BigInteger, nullable=True),
    sa.Column("create_time_us", sa.BigInteger, nullable=False),
    sa.Column("update_time_us", sa.BigInteger, nullable=False),
    sa.Column("sent_time_us", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("tenant", "instance_id", "idempotency_key", name="uq_messages_idempotency"),
    sa.Index("ix_messages_instance_state", "tenant", "instance_id", "state", "seq"),
    sa.Index("ix_messages_whatsapp_id", "whatsapp_message_id"),
    # Seqs are never issued twice, even after the newest rows are deleted (see `events`).
    sqlite_autoincrement=True,
)

# The durable event log: every event is committed here before any subscriber sees it.
events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "cursor",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("type", sa.SmallInteger, nullable=False),  # EventType
    sa.Column("payload", sa.LargeBinary, nullable=False),  # the Event message, serialized
    sa.Column("time_us", sa.BigInteger, nullable=False),
    sa.Index("ix_events_tenant_cursor", "tenant", "cursor"),
    sa.Index("ix_events_time", "time_us"),
    # Cursors are never issued twice: without AUTOINCREMENT SQLite starts again above the
    # largest cursor left, i.e. at 1 once retention has emptied the table. PostgreSQL's
    # sequences never go back.
    sqlite_autoincrement=True,
)

# Where to fetch media received in a message (the engine's opaque reference).
received_media = sa.Table(
    "received_media",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("message_id", sa.String(128), primary_key=True),
    sa.Column("media_ref", sa.Text, nullable=False),
    sa.Column("mime_type", sa.String(255), nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("received_us", sa.BigInteger, nullable=False),
)

# Received messages, as much of each as a reply quotes and MarkRead names (migration 0011).
received_messages = sa.Table(
    "received_messages",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("message_id", sa.String(128), primary_key=True),
    sa.Column("chat_jid", sa.String(100), nullable=False),
    sa.Column("sender_jid", sa.String(100), nullable=False),
    sa.Column("from_me", sa.Boolean, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("sent_us", sa.BigInteger, nullable=False),
    sa.Column("read_us", sa.BigInteger, nullable=False),
    sa.Column("received_us", sa.BigInteger, nullable=False),
    # A poll's options, so its votes can be named (migration 0015); NULL for other kinds.
    sa.Column("poll_options", sa.JSON, nullable=True),
    sa.Index("ix_received_messages_chat", "tenant", "instance_id", "chat_jid", "sent_us"),
)

# Who wrote to each instance in a direct chat (so they are no new contacts when answered).
correspondents = sa.Table(
    "correspondents",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("jid", sa.String(100), primary_key=True),
    sa.Column("first_us", sa.BigInteger, nullable=False),
)

# The linked phone's contacts, as of the last sync.
contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("jid", sa.String(100), primary_key=True),
    sa.Column("phone", sa.String(20), nullable=False),
    sa.Column("lid", sa.String(100), nullable=False),
    sa.Column("full_name", sa.String(255), nullable=False),
    sa.Column("first_name", sa.String(255), nullable=False),
    sa.Column("push_name", sa.String(255), nullable=False),
    sa.Column("business_name", sa.String(255), nullable=False),
    # Lower-case, accents stripped: what name searches match and the list is ordered by.
    sa.Column("search_name", sa.String(800), nullable=False),
    sa.Column("synced_us", sa.BigInteger, nullable=False),
    sa.Index("ix_contacts_order", "tenant", "instance_id", "search_name", "jid"),
)

# Cached answers of CheckNumbers (is this number on WhatsApp?), per instance.
number_checks = sa.Table(
    "number_checks",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("phone", sa.String(20), primary_key=True),
    sa.Column("on_whatsapp", sa.Boolean, nullable=False),
    sa.Column("jid", sa.String(100), nullable=False),
    sa.Column("checked_us", sa.BigInteger, nullable=False),
)

# Group creations and participant adds each instance made (ratelimit/groups.py's caps), so
# the caps hold across restarts; rows older than a day are deleted as new ones come.
group_actions = sa.Table(
    "group_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # "create" or "add"
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Index("group_actions_by_instance", "tenant", "instance_id", "at_us"),
)

# Webhooks (gateway/webhooks): where to POST the tenant's events, and how far each got.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("instance_ids", sa.JSON, nullable=False),  # [] = every instance
    sa.Column("types", sa.JSON, nullable=False),  # EventType numbers; [] = every type
    sa.Column("format", sa.SmallInteger, nullable=False),  # WebhookFormat
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    # The signing secret, sealed with the master key (sessions/vault.py; never in clear).
    sa.Column("secret_key_id", sa.String(32), nullable=False),
    sa.Column("secret_wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("secret_ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("create_time_us", sa.BigInteger, nullable=False),
    sa.Column("update_time_us", sa.BigInteger, nullable=False),
    # Delivery state, owned by the webhook's delivery loop.
    sa.Column("status", sa.SmallInteger, nullable=False),  # WebhookStatus
    sa.Column("disabled_reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("cursor", sa.BigInteger, nullable=False),  # the last event delivered
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failing_since_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500), nullable=False, server_default=""),
    sa.Column("last_error_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_success_us", sa.BigInteger, nullable=False, server_default="0"),
    # Cluster mode: the node delivering the webhook, its fencing epoch (raised on every
    # acquisition) and when its lease expires (gateway/cluster/webhook_leases.py).
    sa.Column("owner_node", sa.String(64), nullable=False, server_default=""),
    sa.Column("lease_epoch", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("lease_expire_us", sa.BigInteger, nullable=False, server_default="0"),
)

# The per-chat store (gateway/store/chats.py, docs/chats.md): one row per chat of each
# instance, kept up to date by the same transactions that write its messages.
chats = sa.Table(
    "chats",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("jid", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, server_default=""),
    # The newest message: its time and storage seq (the list's order: WhatsApp's times are
    # whole seconds), its WhatsApp id, and a short preview.
    sa.Column("last_us", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_message_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("last_preview", sa.String(200), nullable=False, server_default=""),
    sa.Column("last_from_me", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("unread", sa.Integer, nullable=False, server_default="0"),
    # Where the engine reports them (history sync); 0 / false otherwise.
    sa.Column("muted_until_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_chats_activity", "tenant", "instance_id", "last_us", "last_seq"),
)

# Every message of every chat, both directions: received ones (as the inbox records them),
# the instance's own once handed to WhatsApp (with their state), and imported history.
chat_messages = sa.Table(
    "chat_messages",
    metadata,
    # Storage order: breaks ties between messages of the same second.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("chat_jid", sa.String(100), nullable=False),
    # WhatsApp's id (the outbox id for an own message whose fate is unknown).
    sa.Column("message_id", sa.String(128), nullable=False),
    sa.Column("outbox_id", sa.String(40), nullable=False, server_default=""),
    sa.Column("sender_jid", sa.String(100), nullable=False),
    sa.Column("push_name", sa.String(255), nullable=False, server_default=""),
    sa.Column("from_me", sa.Boolean, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    # The text folded (lower case, no accents) for SearchMessages.
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("media_mime_type", sa.String(255), nullable=False, server_default=""),
    sa.Column("media_file_name", sa.String(255), nullable=False, server_default=""),
    sa.Column("sent_us", sa.BigInteger, nullable=False),
    sa.Column("stored_us", sa.BigInteger, nullable=False),
    # An own message's MessageState (0 for received ones).
    sa.Column("state", sa.SmallInteger, nullable=False, server_default="0"),
    # When the instance marked a received message read (0: unread).
    sa.Column("read_us", sa.BigInteger, nullable=False, server_default="0"),
    # Earlier texts of an edited message, oldest first: [{"text", "time_us"}].
    sa.Column("edits", sa.JSON, nullable=True),
    sa.Column("revoked_us", sa.BigInteger, nullable=False, server_default="0"),
    # {sender JID: emoji}
    sa.Column("reactions", sa.JSON, nullable=True),
    sa.Column("from_history", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("tenant", "instance_id", "message_id", name="uq_chat_messages_id"),
    sa.Index("ix_chat_messages_chat", "tenant", "instance_id", "chat_jid", "sent_us", "seq"),
    sa.Index("ix_chat_messages_outbox", "tenant", "instance_id", "outbox_id"),
    sqlite_autoincrement=True,
)

# Per instance: how much history to import and how long to keep chats (0 = no limit). An
# instance without a row has the defaults (gateway/store/chat_settings.py).
chat_settings = sa.Table(
    "chat_settings",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("history_days", sa.Integer, nullable=False),
    sa.Column("history_messages_per_chat", sa.Integer, nullable=False),
    sa.Column("retention_days", sa.Integer, nullable=False),
)

# Several nodes on one PostgreSQL (gateway/cluster): the nodes, heartbeating...
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("address", sa.String(300), nullable=False),  # host:port other nodes may call
    sa.Column("max_instances", sa.Integer, nullable=False),
    sa.Column("start_time_us", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_us", sa.BigInteger, nullable=False),  # the database's clock
)

# ...and which node owns each instance: one lease per instance, its epoch raised on every
# acquisition; owner-only writes check it (gateway/store/fencing.py). Expiry times are the
# database's clock, so nodes' clocks never have to agree.
instance_leases = sa.Table(
    "instance_leases",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("owner_node", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expire_us", sa.BigInteger, nullable=False),
    # A released lease handed to one node: until reserved_until_us only that node claims it
    # (a graceful hand-over, or a new instance placed on the least loaded node).
    sa.Column("reserved_for", sa.String(64), nullable=True),
    sa.Column("reserved_until_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("instance_leases_by_owner", "owner_node", "expire_us"),
)
