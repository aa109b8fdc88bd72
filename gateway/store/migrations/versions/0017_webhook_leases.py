"""Cluster mode (gateway/cluster, docs/cluster.md):

- each webhook is delivered by one node at a time, through a lease on its row (the owner
  node, a fencing epoch raised on every acquisition, and when it expires); the delivery
  state (cursor, retries, status) is written only under that lease;
- PostgreSQL: every statement that inserts into `events` notifies the channel
  `zapgate_events` (a statement-level trigger, so every writer does, whether it goes
  through `append_events` or writes its own statements); PostgreSQL sends the notification
  when the transaction commits, never for one rolled back, and once per transaction. Nodes
  LISTEN to wake their subscribers (gateway/events/wakeups.py).

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


EVENTS_CHANNEL = "zapgate_events"  # gateway/events/wakeups.py listens on it


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION zapgate_events_appended() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_notify('{EVENTS_CHANNEL}', ''); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER events_appended AFTER INSERT ON events "
            "FOR EACH STATEMENT EXECUTE PROCEDURE zapgate_events_appended()"
        )
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("owner_node", sa.String(64), nullable=False, server_default=""))
        for name in ("lease_epoch", "lease_expire_us"):
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_appended ON events")
        op.execute("DROP FUNCTION zapgate_events_appended()")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("lease_expire_us")
        batch.drop_column("lease_epoch")
        batch.drop_column("owner_node")
