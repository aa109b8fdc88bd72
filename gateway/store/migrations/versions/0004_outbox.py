"""The durable outbox, send policies and scheduler counters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("send_policy", sa.JSON, nullable=True))
        batch.add_column(
            sa.Column("sending_paused_reason", sa.String(200), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("scheduler_state", sa.JSON, nullable=True))
    op.create_table(
        "messages",
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
        sa.Column("content", sa.JSON, nullable=False),
        sa.Column("media", sa.LargeBinary, nullable=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("failure_reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("whatsapp_message_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("send_at_us", sa.BigInteger, nullable=False),
        sa.Column("expire_us", sa.BigInteger, nullable=True),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("sent_time_us", sa.BigInteger, nullable=True),
        sa.UniqueConstraint(
            "tenant", "instance_id", "idempotency_key", name="uq_messages_idempotency"
        ),
    )
    op.create_index(
        "ix_messages_instance_state", "messages", ["tenant", "instance_id", "state", "seq"]
    )
    op.create_index("ix_messages_whatsapp_id", "messages", ["whatsapp_message_id"])


def downgrade() -> None:
    op.drop_table("messages")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("scheduler_state")
        batch.drop_column("sending_paused_reason")
        batch.drop_column("send_policy")
