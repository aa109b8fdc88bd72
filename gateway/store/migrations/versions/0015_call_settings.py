"""Per-instance call settings (reject incoming calls, and the text answering the caller),
and the options of received polls (their votes are named from them).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("call_settings", sa.JSON, nullable=True))
    with op.batch_alter_table("received_messages") as batch:
        batch.add_column(sa.Column("poll_options", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("received_messages") as batch:
        batch.drop_column("poll_options")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("call_settings")
