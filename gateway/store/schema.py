"""Tables of the state store. Times are integer microseconds since the epoch (UTC): exact,
and the same on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(128), nullable=False),
    sa.Column("phone", sa.String(16), nullable=False, server_default=""),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("create_time_us", sa.BigInteger, nullable=False),
    sa.Column("update_time_us", sa.BigInteger, nullable=False),
    sa.Index("ix_instances_tenant_state_id", "tenant", "state", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    # SHA-256 of the key's secret part; the key itself is never stored.
    sa.Column("secret_sha256", sa.LargeBinary(32), nullable=False),
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("create_time_us", sa.BigInteger, nullable=False),
    sa.Column("revoke_time_us", sa.BigInteger, nullable=True),
)
