"""Which public calls act on what only the instance's owner node has in memory (its engine
connection, its send scheduler, its simulated phone, its lookup and group budgets), and so
run there: a node that does not own the instance forwards them (cluster/forwarding.py).
Every other call reads or writes the shared store and is served where it arrives.
tests/test_cluster_forwarding.py checks that every public RPC is in exactly one set."""

from __future__ import annotations

from zapgate.gateway.rpc.access import REQUIRED_ROLES

OWNER_BOUND = frozenset(
    {
        # Connection, scheduler and their counters (UpdateInstance may change the policy).
        "InstanceService/UpdateInstance",
        "InstanceService/DeleteInstance",
        "InstanceService/Connect",
        "InstanceService/Logout",
        "InstanceService/Reconnect",
        "InstanceService/GetInstanceStats",
        "InstanceService/PauseSending",
        "InstanceService/ResumeSending",
        # The outbox hand-off is scheduled on the owner; the rest talks to the engine.
        "MessageService/SendMessage",
        "MessageService/CancelMessage",
        "MessageService/DownloadMedia",
        "MessageService/React",
        "MessageService/EditMessage",
        "MessageService/RevokeMessage",
        "MessageService/MarkRead",
        "MessageService/SendChatPresence",
        "MessageService/SetPresence",
        "MessageService/SubscribePresence",
        "ContactService/SyncContacts",
        "ContactService/CheckNumbers",
        "ContactService/ResolveJids",  # the engine's own LID store
        "ChatService/MarkChatRead",
        # Every group call goes to WhatsApp or to the owner's group pacer.
        *(f"GroupService/{name}" for name in REQUIRED_ROLES["GroupService"]),
        # The simulated phone lives in the owner's engine worker.
        *(f"SimulatorService/{name}" for name in REQUIRED_ROLES["SimulatorService"]),
    }
)

ANY_NODE = frozenset(
    {
        "InstanceService/CreateInstance",
        "InstanceService/GetInstance",
        "InstanceService/ListInstances",
        "MessageService/GetMessage",
        "MessageService/ListMessages",
        "ContactService/ListContacts",
        "EventService/Subscribe",  # the shared event log
        *(f"WebhookService/{name}" for name in REQUIRED_ROLES["WebhookService"]),
        *(f"KeyService/{name}" for name in REQUIRED_ROLES["KeyService"]),
        *(
            f"ChatService/{name}"
            for name in REQUIRED_ROLES["ChatService"]
            if name != "MarkChatRead"
        ),
    }
)
