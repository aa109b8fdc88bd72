"""KeyService: create, list and revoke the caller's tenant's API keys (admin keys only: see
rpc/access.py). A key never hands out more than it has: no higher role, no wider scope; a
scoped key manages only keys inside its scope, and the others are NOT_FOUND to it."""

from __future__ import annotations

from typing import Any

import grpc.aio

from zapgate.gateway.rpc.auth_cache import CachedAuthenticator
from zapgate.gateway.rpc.errors import FieldViolation, KeyNotFound, PermissionDenied
from zapgate.gateway.rpc.paging import KEY_ID, decode_page_token, encode_page_token, page_size
from zapgate.gateway.rpc.roles import Caller, Role
from zapgate.gateway.rpc.tenancy import current_caller
from zapgate.gateway.rpc.validation import check_instance_id, check_text, raise_if_any
from zapgate.gateway.services.convert import timestamp
from zapgate.gateway.store.apikeys import ApiKeyInfo, ApiKeyRepository
from zapgate.v1 import key_pb2, key_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
MAX_SCOPE = 100
MAX_DESCRIPTION = 200
MAX_KEY_ID_CHARS = 32

ROLES_TO_PROTO = {
    Role.VIEWER: key_pb2.KEY_ROLE_VIEWER,
    Role.SENDER: key_pb2.KEY_ROLE_SENDER,
    Role.OPERATOR: key_pb2.KEY_ROLE_OPERATOR,
    Role.ADMIN: key_pb2.KEY_ROLE_ADMIN,
}
ROLES_FROM_PROTO = {value: role for role, value in ROLES_TO_PROTO.items()}


class KeyService(key_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: ApiKeyRepository, auth_cache: CachedAuthenticator | None) -> None:
        self._keys = keys
        self._auth_cache = auth_cache

    async def CreateKey(
        self, request: key_pb2.CreateKeyRequest, context: Context
    ) -> key_pb2.CreateKeyResponse:
        role = ROLES_FROM_PROTO.get(request.role)
        violations = [] if role else [FieldViolation("role", "required: viewer to admin")]
        if len(request.instance_ids) > MAX_SCOPE:
            violations.append(FieldViolation("instance_ids", f"at most {MAX_SCOPE}"))
        for instance_id in request.instance_ids:
            violations += check_instance_id("instance_ids", instance_id)
        violations += check_text("description", request.description, MAX_DESCRIPTION)
        raise_if_any(violations)
        assert role is not None
        caller = current_caller()
        check_grant(caller, role, list(request.instance_ids))
        secret, info = await self._keys.create(
            caller.tenant, request.description, role, list(request.instance_ids)
        )
        return key_pb2.CreateKeyResponse(key=key_to_proto(info), secret=secret)

    async def ListKeys(
        self, request: key_pb2.ListKeysRequest, context: Context
    ) -> key_pb2.ListKeysResponse:
        limit = page_size(request.page_size)
        filter_key = f"revoked={int(request.include_revoked)}"
        after_id = decode_page_token(request.page_token, filter_key, KEY_ID)
        caller = current_caller()
        records = await self._keys.list_page(
            caller.tenant,
            after_id=after_id or "",
            limit=limit + 1,
            include_revoked=request.include_revoked,
        )
        page, more = records[:limit], len(records) > limit
        # A scoped key's page may come out shorter than asked: the others are not its own.
        return key_pb2.ListKeysResponse(
            keys=[key_to_proto(info) for info in page if caller.covers(info.scope)],
            next_page_token=encode_page_token(page[-1].key_id, filter_key) if more else "",
        )

    async def RevokeKey(
        self, request: key_pb2.RevokeKeyRequest, context: Context
    ) -> key_pb2.RevokeKeyResponse:
        raise_if_any(
            [FieldViolation("key_id", "required")]
            if not request.key_id
            else check_text("key_id", request.key_id, MAX_KEY_ID_CHARS)
        )
        caller = current_caller()
        info = await self._keys.get(caller.tenant, request.key_id)
        if info is None or not caller.covers(info.scope):
            raise KeyNotFound(request.key_id)
        # Revoking a revoked key again changes nothing and answers the same.
        await self._keys.revoke(info.key_id, caller.tenant)
        if self._auth_cache is not None:
            self._auth_cache.forget(info.key_id)
        revoked = await self._keys.get(caller.tenant, info.key_id)
        assert revoked is not None
        return key_pb2.RevokeKeyResponse(key=key_to_proto(revoked))


def check_grant(caller: Caller, role: Role, scope: list[str]) -> None:
    """Raises unless `caller` may create a key of `role` reaching `scope`."""
    if role > caller.role:
        raise PermissionDenied(
            f"a {caller.role.label} key cannot create a {role.label} key",
            metadata={"required_role": role.label, "role": caller.role.label},
        )
    if not caller.covers(scope):
        raise PermissionDenied(
            "a key scoped to instances can only create keys scoped to some of its own"
            " instances (name them in instance_ids)"
        )


def key_to_proto(info: ApiKeyInfo) -> key_pb2.ApiKey:
    key = key_pb2.ApiKey(
        id=info.key_id,
        role=ROLES_TO_PROTO[info.role],
        instance_ids=info.scope,
        description=info.description,
        create_time=timestamp(info.create_time_us),
    )
    if info.revoke_time_us is not None:
        key.revoke_time.CopyFrom(timestamp(info.revoke_time_us))
    return key
