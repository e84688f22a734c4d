"""AInTandem Python SDK: workspaces, agent sandboxes, messages and collaborations.

    from aintandem import AInTandemClient

    async with AInTandemClient(email="me@example.com", password="...") as client:
        workspace = await client.workspaces.create(name="My Workspace")
        sandbox = await client.sandboxes.create(
            workspace.id,
            name="frontend-team",
            agent_config={"primary_agent": {"name": "architect", "role": "Frontend Architect"}},
        )
        await sandbox.wait_until("running")

The blocking twin is `AInTandemSyncClient` (also `aintandem.sync.AInTandemClient`).
"""

from ._client import AInTandemClient
from ._errors import (
    AInTandemError,
    APIConnectionError,
    AuthenticationFailed,
    AuthorizationFailed,
    CollaborationFailed,
    ConfigurationInvalid,
    Conflict,
    InternalError,
    MessageDeliveryFailed,
    RateLimitExceeded,
    ResourceAlreadyExists,
    ResourceExhausted,
    ResourceNotFound,
    SandboxNotReady,
    ServiceUnavailable,
    ValidationError,
    WaitTimeout,
)
from ._models import (
    AggregateMetrics,
    BroadcastResult,
    CollaborationInfo,
    CollaborationProgress,
    CollaborationStarted,
    CollaborationSummary,
    DiscoveredAgent,
    EffectiveLLM,
    LifecycleResult,
    LogEntry,
    LoginResult,
    Logs,
    Message,
    MessageAccepted,
    PageMeta,
    SandboxConfig,
    SandboxInfo,
    SandboxMetrics,
    SandboxStatus,
    StreamEvent,
    SystemHealth,
    SystemInfo,
    User,
    Workspace,
    WorkspaceConfig,
)
from ._pagination import Page, Paginator
from ._resources import Collaboration, Sandbox
from ._streams import EventStream
from ._version import __version__
from .sync import AInTandemSyncClient

__all__ = [
    "AInTandemClient",
    "AInTandemError",
    "AInTandemSyncClient",
    "APIConnectionError",
    "AggregateMetrics",
    "AuthenticationFailed",
    "AuthorizationFailed",
    "BroadcastResult",
    "Collaboration",
    "CollaborationFailed",
    "CollaborationInfo",
    "CollaborationProgress",
    "CollaborationStarted",
    "CollaborationSummary",
    "ConfigurationInvalid",
    "Conflict",
    "DiscoveredAgent",
    "EffectiveLLM",
    "EventStream",
    "InternalError",
    "LifecycleResult",
    "LogEntry",
    "LoginResult",
    "Logs",
    "Message",
    "MessageAccepted",
    "MessageDeliveryFailed",
    "Page",
    "PageMeta",
    "Paginator",
    "RateLimitExceeded",
    "ResourceAlreadyExists",
    "ResourceExhausted",
    "ResourceNotFound",
    "Sandbox",
    "SandboxConfig",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxNotReady",
    "SandboxStatus",
    "ServiceUnavailable",
    "StreamEvent",
    "SystemHealth",
    "SystemInfo",
    "User",
    "ValidationError",
    "WaitTimeout",
    "Workspace",
    "WorkspaceConfig",
    "__version__",
]
