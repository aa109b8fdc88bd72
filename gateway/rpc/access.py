"""What each role may call, and which instances a key reaches: the table every public RPC
is checked against by the call guard before its service runs (docs/security.md shows it).

- A role too low for the method: PERMISSION_DENIED (it says nothing about any instance).
- A method that concerns the whole tenant (`TENANT_WIDE`: creating an instance, webhooks,
  which carry events of any instance): PERMISSION_DENIED for a key scoped to instances.
- An instance outside the key's scope: NOT_FOUND, exactly as an instance that does not
  exist, so a scoped key learns nothing of the others' ids.
- Tenant-wide listings (ListInstances, Subscribe) narrow themselves to the scope through
  `tenancy.visible_instances`.
A method missing from the table is refused to every key, so a new RPC cannot slip through
unchecked (tests/test_auth.py walks every service and fails on it)."""

from __future__ import annotations

from typing import Any

from zapgate.gateway.rpc.errors import InstanceNotFound, PermissionDenied
from zapgate.gateway.rpc.roles import Caller, Role

VIEWER, SENDER, OPERATOR, ADMIN = Role.VIEWER, Role.SENDER, Role.OPERATOR, Role.ADMIN

# The least role each public method needs, per service.
REQUIRED_ROLES: dict[str, dict[str, Role]] = {
    "InstanceService": {
        "CreateInstance": OPERATOR,
        "GetInstance": VIEWER,
        "ListInstances": VIEWER,
        "UpdateInstance": OPERATOR,  # the send policy too
        "DeleteInstance": OPERATOR,
        "Connect": OPERATOR,
        "Logout": OPERATOR,
        "Reconnect": OPERATOR,
        "GetInstanceStats": VIEWER,
        "PauseSending": OPERATOR,
        "ResumeSending": OPERATOR,
    },
    "MessageService": {
        "SendMessage": SENDER,
        "GetMessage": VIEWER,
        "ListMessages": VIEWER,
        "CancelMessage": SENDER,
        "DownloadMedia": VIEWER,
        "React": SENDER,
        "EditMessage": SENDER,
        "RevokeMessage": SENDER,
        "MarkRead": SENDER,
        "SendChatPresence": SENDER,
        "SetPresence": SENDER,
        "SubscribePresence": SENDER,  # a stanza to WhatsApp, paced like chat presences
    },
    "ContactService": {
        "SyncContacts": SENDER,
        "ListContacts": VIEWER,
        "CheckNumbers": SENDER,  # spends the instance's lookup budget
        "ResolveJids": VIEWER,  # asks nothing of WhatsApp
    },
    "EventService": {"Subscribe": VIEWER},
    "GroupService": {
        "ListGroups": VIEWER,
        "GetGroup": VIEWER,
        "CreateGroup": OPERATOR,
        "UpdateParticipants": OPERATOR,
        "SetGroupName": OPERATOR,
        "SetGroupTopic": OPERATOR,
        "SetGroupSettings": OPERATOR,
        "GetInviteLink": OPERATOR,  # the link lets anyone join; `revoke` resets it
        "PreviewInvite": VIEWER,
        "JoinGroup": OPERATOR,
        "LeaveGroup": OPERATOR,
        "SetGroupPhoto": OPERATOR,
        "ListJoinRequests": VIEWER,
    },
    "WebhookService": {
        "CreateWebhook": OPERATOR,
        "GetWebhook": VIEWER,
        "ListWebhooks": VIEWER,
        "UpdateWebhook": OPERATOR,
        "DeleteWebhook": OPERATOR,
        "TestWebhook": OPERATOR,
    },
    # The phone side of the simulator engine: test drivers act as the outside world.
    "SimulatorService": {
        "ScanQr": OPERATOR,
        "EnterPairCode": OPERATOR,
        "DropConnection": OPERATOR,
        "LogoutFromPhone": OPERATOR,
        "TemporaryBan": OPERATOR,
        "StreamReplaced": OPERATOR,
        "SetKeepAlive": OPERATOR,
        "FailSends": OPERATOR,
        "ListReceived": VIEWER,
        "InjectIncomingMessage": OPERATOR,
        "SendReceipt": OPERATOR,
        "SetContacts": OPERATOR,
        "SetRegisteredNumbers": OPERATOR,
        "SetGroupPrivacy": OPERATOR,
        "ChangeGroup": OPERATOR,
        "SetLidMappings": OPERATOR,
        "InjectPresence": OPERATOR,
        "InjectCall": OPERATOR,
        "ReadOnPhone": OPERATOR,
        "PreloadHistory": OPERATOR,
    },
    "KeyService": {"CreateKey": ADMIN, "ListKeys": ADMIN, "RevokeKey": ADMIN},
    "ChatService": {
        "ListChats": VIEWER,
        "GetChat": VIEWER,
        "ListChatMessages": VIEWER,
        "GetChatMessage": VIEWER,
        "SearchMessages": VIEWER,
        "MarkChatRead": SENDER,  # sends WhatsApp's read receipts, like MarkRead
        "ExportChat": VIEWER,
        "GetChatSettings": VIEWER,
        "UpdateChatSettings": OPERATOR,  # history bounds and retention: deletes messages
    },
}

# Methods whose effect reaches beyond any instance list: refused to scoped keys. A new
# instance is outside every scope; a webhook streams events of the whole tenant.
TENANT_WIDE = frozenset(
    {
        "InstanceService/CreateInstance",
        *(f"WebhookService/{name}" for name in REQUIRED_ROLES["WebhookService"]),
    }
)

PACKAGE = "zapgate.v1"


class MethodAccess:
    """The access rule of one method, looked up once when its handler is wrapped."""

    __slots__ = ("method", "required", "tenant_wide")

    def __init__(self, method: str) -> None:
        """`method`: the gRPC path, `/zapgate.v1.Service/Method`."""
        service, _, name = method.removeprefix(f"/{PACKAGE}.").partition("/")
        self.method = method
        self.required = REQUIRED_ROLES.get(service, {}).get(name)
        self.tenant_wide = f"{service}/{name}" in TENANT_WIDE

    def check(self, caller: Caller, request: Any) -> None:
        """Raises unless `caller` may make this call on the instance `request` names (ids
        already in lower case)."""
        if self.required is None:
            raise PermissionDenied(f"{self.method} is not open to API keys")
        if caller.role < self.required:
            raise PermissionDenied(
                f"{self.method} needs an API key with role {self.required.label} or above;"
                f" this key is {caller.role.label}",
                metadata={"required_role": self.required.label, "role": caller.role.label},
            )
        if not caller.scope:
            return
        if self.tenant_wide:
            raise PermissionDenied(
                f"{self.method} concerns the whole tenant; this key is scoped to instances",
                metadata={"required_role": self.required.label, "role": caller.role.label},
            )
        instance_id = named_instance(request)
        if instance_id and not caller.reaches(instance_id):
            raise InstanceNotFound(instance_id)


def named_instance(request: Any) -> str:
    """The one instance a request names: `instance_id`, or UpdateInstance's `instance.id`."""
    value = getattr(request, "instance_id", None)
    if isinstance(value, str):
        return value
    value = getattr(getattr(request, "instance", None), "id", None)
    return value if isinstance(value, str) else ""
