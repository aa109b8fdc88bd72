"""Who wrote to each instance: inbound senders are known contacts, not new ones.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "correspondents",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("jid", sa.String(100), primary_key=True),
        sa.Column("first_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("correspondents")
