"""Graceful hand-over between cluster nodes: a released lease can be reserved for one node
(the least loaded, or the one a stopping node drains to) for a short time, so that node
claims it and nobody else does.

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance_leases") as batch:
        batch.add_column(sa.Column("reserved_for", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("reserved_until_us", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("instance_leases") as batch:
        batch.drop_column("reserved_until_us")
        batch.drop_column("reserved_for")
