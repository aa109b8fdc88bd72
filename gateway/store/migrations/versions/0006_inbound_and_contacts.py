"""Received media references, synced contacts and cached number checks.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "received_media",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.String(128), primary_key=True),
        sa.Column("media_ref", sa.Text, nullable=False),
        sa.Column("mime_type", sa.String(255), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "contacts",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("jid", sa.String(100), primary_key=True),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("lid", sa.String(100), nullable=False),
        sa.Column("full_name", sa.String(255), nullable=False),
        sa.Column("first_name", sa.String(255), nullable=False),
        sa.Column("push_name", sa.String(255), nullable=False),
        sa.Column("business_name", sa.String(255), nullable=False),
        sa.Column("search_name", sa.String(800), nullable=False),
        sa.Column("synced_us", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_contacts_order", "contacts", ["tenant", "instance_id", "search_name", "jid"]
    )
    op.create_table(
        "number_checks",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("phone", sa.String(20), primary_key=True),
        sa.Column("on_whatsapp", sa.Boolean, nullable=False),
        sa.Column("jid", sa.String(100), nullable=False),
        sa.Column("checked_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("number_checks")
    op.drop_table("contacts")
    op.drop_table("received_media")
