"""Cluster mode: each webhook is delivered by one node at a time, through a lease on its row
(the owner node, a fencing epoch raised on every acquisition, and when it expires). The
delivery state (cursor, retries, status) is written only under that lease.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("owner_node", sa.String(64), nullable=False, server_default=""))
        for name in ("lease_epoch", "lease_expire_us"):
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("lease_expire_us")
        batch.drop_column("lease_epoch")
        batch.drop_column("owner_node")
