"""Connection state: reason, detail, linked JID, ban, keepalive health, proxy, intent.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS: list[sa.Column[Any]] = [
    sa.Column("state_reason", sa.SmallInteger, nullable=False, server_default="1"),
    sa.Column("state_detail", sa.String(500), nullable=False, server_default=""),
    sa.Column("state_change_time_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("jid", sa.String(100), nullable=False, server_default=""),
    sa.Column("ban_code", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ban_expire_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("keepalive_failing", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("want_connected", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("proxy_url", sa.String(500), nullable=False, server_default=""),
]


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for column in COLUMNS:
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column.name)
