"""API keys: `zg_<key id>_<secret>`. Only the SHA-256 of the secret is stored; the key id
finds the row, and a constant-time compare checks the secret. The secret has 256 bits of
entropy, so a fast hash is enough (a slow password hash buys nothing here)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.gateway.clock import MicrosClock, system_micros
from zapgate.gateway.rpc.roles import Caller, Role
from zapgate.gateway.store.schema import api_keys

KEY_PREFIX = "zg"


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    tenant: str
    description: str
    create_time_us: int
    revoke_time_us: int | None
    role: Role = Role.ADMIN
    scope: tuple[str, ...] = ()  # sorted instance ids; empty: the whole tenant

    @property
    def revoked(self) -> bool:
        return self.revoke_time_us is not None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(key: str) -> tuple[str, str] | None:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class ApiKeyRepository:
    def __init__(self, engine: AsyncEngine, clock: MicrosClock = system_micros) -> None:
        self._engine = engine
        self._clock = clock

    async def create(
        self,
        tenant: str,
        description: str = "",
        role: Role = Role.ADMIN,
        scope: tuple[str, ...] | list[str] = (),
    ) -> tuple[str, ApiKeyInfo]:
        """Returns the new key (shown once, never stored) and its record. A key's role and
        scope never change afterwards (revoke it and create another): so a cached check of a
        key can only go stale by revocation, which the auth cache's short TTL bounds."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32).replace("_", "-")  # `_` separates the parts
        scope = tuple(sorted(set(scope)))
        info = ApiKeyInfo(key_id, tenant, description, self._clock(), None, role, scope)
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.insert(api_keys).values(
                    key_id=key_id,
                    tenant=tenant,
                    secret_sha256=_hash(secret),
                    description=description,
                    create_time_us=info.create_time_us,
                    role=role.label,
                    instance_scope=" ".join(scope),
                )
            )
        return f"{KEY_PREFIX}_{key_id}_{secret}", info

    async def authenticate(self, key: str) -> Caller | None:
        """Who a valid, unrevoked key is; None otherwise."""
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        api_keys.c.tenant,
                        api_keys.c.secret_sha256,
                        api_keys.c.role,
                        api_keys.c.instance_scope,
                    ).where(api_keys.c.key_id == key_id, api_keys.c.revoke_time_us.is_(None))
                )
            ).first()
        if row is None or not hmac.compare_digest(bytes(row.secret_sha256), _hash(secret)):
            return None
        return Caller(str(row.tenant), key_id, Role.parse(row.role), _scope(row.instance_scope))

    async def list(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        query = sa.select(api_keys).order_by(api_keys.c.create_time_us, api_keys.c.key_id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_info(row) for row in rows]

    async def list_page(
        self, tenant: str, *, after_id: str, limit: int, include_revoked: bool
    ) -> Sequence[ApiKeyInfo]:  # (`list` here is the method above)
        """A tenant's keys ordered by id, strictly after `after_id` (keyset paging)."""
        query = sa.select(api_keys).where(api_keys.c.tenant == tenant, api_keys.c.key_id > after_id)
        if not include_revoked:
            query = query.where(api_keys.c.revoke_time_us.is_(None))
        query = query.order_by(api_keys.c.key_id).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_info(row) for row in rows]

    async def get(self, tenant: str, key_id: str) -> ApiKeyInfo | None:
        query = sa.select(api_keys).where(api_keys.c.tenant == tenant, api_keys.c.key_id == key_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _info(row)

    async def revoke(self, key_id: str, tenant: str | None = None) -> bool:
        """Marks a key revoked (kept for the audit trail). False if no such active key (of
        `tenant`, when given)."""
        query = sa.update(api_keys).where(
            api_keys.c.key_id == key_id, api_keys.c.revoke_time_us.is_(None)
        )
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(revoke_time_us=self._clock()))
        return bool(result.rowcount)

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            total = await conn.scalar(sa.select(sa.func.count()).select_from(api_keys))
        return int(total or 0)


def _info(row: sa.RowMapping) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row["key_id"],
        tenant=row["tenant"],
        description=row["description"],
        create_time_us=row["create_time_us"],
        revoke_time_us=row["revoke_time_us"],
        role=Role.parse(row["role"]),
        scope=_scope(row["instance_scope"]),
    )


def _scope(stored: str) -> tuple[str, ...]:
    return tuple(stored.split())
