"""Several nodes on one PostgreSQL: the nodes and their heartbeats, and each instance's lease
(its owner node, a fencing epoch raised on every acquisition, and when it expires).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("address", sa.String(300), nullable=False),
        sa.Column("max_instances", sa.Integer, nullable=False),
        sa.Column("start_time_us", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "instance_leases",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("owner_node", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expire_us", sa.BigInteger, nullable=False),
    )
    op.create_index("instance_leases_by_owner", "instance_leases", ["owner_node", "expire_us"])


def downgrade() -> None:
    op.drop_index("instance_leases_by_owner", table_name="instance_leases")
    op.drop_table("instance_leases")
    op.drop_table("nodes")
