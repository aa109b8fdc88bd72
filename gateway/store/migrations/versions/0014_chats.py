"""The per-chat store: chats, the messages of both directions, and per-instance chat
settings (history import bounds, retention; docs/chats.md).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("jid", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("last_us", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_message_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("last_preview", sa.String(200), nullable=False, server_default=""),
        sa.Column("last_from_me", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("unread", sa.Integer, nullable=False, server_default="0"),
        sa.Column("muted_until_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_chats_activity", "chats", ["tenant", "instance_id", "last_us", "last_seq"])
    op.create_table(
        "chat_messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("chat_jid", sa.String(100), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("outbox_id", sa.String(40), nullable=False, server_default=""),
        sa.Column("sender_jid", sa.String(100), nullable=False),
        sa.Column("push_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("from_me", sa.Boolean, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("media_mime_type", sa.String(255), nullable=False, server_default=""),
        sa.Column("media_file_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("sent_us", sa.BigInteger, nullable=False),
        sa.Column("stored_us", sa.BigInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("read_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("edits", sa.JSON, nullable=True),
        sa.Column("revoked_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reactions", sa.JSON, nullable=True),
        sa.Column("from_history", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("tenant", "instance_id", "message_id", name="uq_chat_messages_id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_chat_messages_chat",
        "chat_messages",
        ["tenant", "instance_id", "chat_jid", "sent_us", "seq"],
    )
    op.create_index(
        "ix_chat_messages_outbox", "chat_messages", ["tenant", "instance_id", "outbox_id"]
    )
    op.create_table(
        "chat_settings",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("history_days", sa.Integer, nullable=False),
        sa.Column("history_messages_per_chat", sa.Integer, nullable=False),
        sa.Column("retention_days", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chat_settings")
    op.drop_index("ix_chat_messages_outbox", table_name="chat_messages")
    op.drop_index("ix_chat_messages_chat", table_name="chat_messages")
    op.drop_table("chat_messages")
    op.drop_index("ix_chats_activity", table_name="chats")
    op.drop_table("chats")
