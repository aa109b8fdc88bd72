"""Received messages, as much of each as a reply quotes and MarkRead names: its chat, its
sender, its kind and text, and whether the instance marked it read.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "received_messages",
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
    )
    op.create_index(
        "ix_received_messages_chat",
        "received_messages",
        ["tenant", "instance_id", "chat_jid", "sent_us"],
    )


def downgrade() -> None:
    op.drop_index("ix_received_messages_chat", "received_messages")
    op.drop_table("received_messages")
