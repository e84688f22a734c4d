"""Typed views of the API's responses.

Every model tolerates fields it does not declare (kept as extra attributes), so a newer server
does not break an older SDK; the SDK's test suite checks every declared field against the
server's OpenAPI document, so a renamed field fails a test instead of silently reading None.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class APIModel(BaseModel):
    """Base of the response models: extra fields are kept, aliases and names both accepted."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, value: Any) -> Any:
        # The server sends null for "nothing yet" (metrics before the first sample): a field
        # with a non-null default takes its default rather than failing validation.
        if not isinstance(value, dict):
            return value
        drop = [
            key
            for key, item in value.items()
            if item is None
            and key in cls.model_fields
            and not cls.model_fields[key].is_required()
            and (
                cls.model_fields[key].default is not None
                or cls.model_fields[key].default_factory is not None
            )
        ]
        return {k: v for k, v in value.items() if k not in drop} if drop else value


# -- envelope ----------------------------------------------------------------------------------


class Meta(APIModel):
    request_id: str | None = None
    timestamp: datetime | None = None
    version: str | None = None


class PageMeta(Meta):
    total: int = 0
    page: int = 1
    per_page: int = 20
    total_pages: int = 0
    has_next: bool = False
    has_prev: bool = False


# -- auth ----------------------------------------------------------------------------------------


class User(APIModel):
    user_id: str
    email: str
    name: str
    organization: str | None = None
    created_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.user_id


class LoginResult(APIModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user: User


class TokenRefresh(APIModel):
    access_token: str
    refresh_token: str | None = None
    token_type: str = "Bearer"
    expires_in: int


# -- workspaces ----------------------------------------------------------------------------------


class ResourceDefaults(APIModel):
    memory_mb: int | None = None
    cpu_cores: float | None = None
    timeout_seconds: int | None = None


class WorkspaceSettings(APIModel):
    max_sandboxes: int | None = None
    default_llm_provider: str | None = None
    collaboration_policy: str | None = None
    resource_defaults: ResourceDefaults | None = None


class SandboxSummary(APIModel):
    sandbox_id: str
    name: str
    status: str

    @property
    def id(self) -> str:
        return self.sandbox_id


class Workspace(APIModel):
    workspace_id: str
    name: str
    description: str | None = None
    owner_id: str | None = None
    settings: WorkspaceSettings | None = None
    sandbox_count: int | None = None
    sandboxes: list[SandboxSummary] | None = None  # only in GET /workspaces/{id}
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.workspace_id


class LLMProvider(APIModel):
    name: str
    api_key: str | None = None  # masked by the server, or the ${ENV_VAR} reference
    api_key_set: bool | None = None
    base_url: str | None = None
    models: list[str] = Field(default_factory=list)
    default_model: str | None = None
    parameters: dict[str, Any] | None = None


class McpServer(APIModel):
    name: str
    status: str | None = None
    transport: str | None = None
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True


class EffectiveLLM(APIModel):
    """The provider and model an agent that names none really gets (`offline`: the embedded
    model, when the workspace configures no usable provider)."""

    provider: str
    model: str
    source: str | None = None  # default_llm_provider | only_provider | offline
    reason: str | None = None


class WorkspaceConfig(APIModel):
    workspace_id: str
    settings: WorkspaceSettings | None = None
    llm_providers: list[LLMProvider] = Field(default_factory=list)
    mcp_servers: list[McpServer] = Field(default_factory=list)
    collaboration_policy: dict[str, Any] = Field(default_factory=dict)
    effective_llm: EffectiveLLM | None = None


class AgentMetrics(APIModel):
    messages_processed: int = 0
    avg_response_time_ms: float | None = None


class DiscoveredAgent(APIModel):
    sandbox_id: str
    sandbox_name: str | None = None
    agent_name: str
    role: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    capabilities_source: str | None = None
    status: str
    metrics: AgentMetrics | None = None
    match_score: float | None = None


class AggregateMetrics(APIModel):
    workspace_id: str
    period: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
    by_sandbox: list[dict[str, Any]] = Field(default_factory=list)


class BroadcastResult(APIModel):
    broadcast_id: str
    recipients: list[str] = Field(default_factory=list)
    denied: list[dict[str, Any]] = Field(default_factory=list)
    message_ids: list[str] = Field(default_factory=list)
    timestamp: datetime | None = None


# -- sandboxes -----------------------------------------------------------------------------------


class Health(APIModel):
    status: str | None = None
    last_heartbeat: datetime | None = None


class ConnectionDetails(APIModel):
    collaboration_bus_url: str | None = None
    api_endpoint: str | None = None


class SandboxMetricsSummary(APIModel):
    cpu_usage_percent: float | None = None
    memory_usage_mb: float | None = None
    message_count: int | None = None
    uptime_seconds: int | None = None


class SandboxInfo(APIModel):
    """A sandbox as the API describes it (list items, details, or the 201 of a create)."""

    sandbox_id: str
    name: str | None = None
    workspace_id: str | None = None
    status: str | None = None
    status_reason: str | None = None
    agent_config: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    mcp_servers: list[str] | None = None
    health: Health | None = None
    restart_count: int | None = None
    metrics: SandboxMetricsSummary | None = None  # details only
    connection_details: ConnectionDetails | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None


class LifecycleResult(APIModel):
    sandbox_id: str
    status: str
    estimated_ready_seconds: int | None = None


class LogEntry(APIModel):
    timestamp: datetime
    level: str
    message: str


class Logs(APIModel):
    sandbox_id: str
    logs: list[LogEntry] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class SandboxStatus(APIModel):
    sandbox_id: str
    status: str
    health: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    connections: dict[str, Any] = Field(default_factory=dict)


class SandboxMetrics(APIModel):
    sandbox_id: str
    timestamp: datetime | None = None
    resources: dict[str, Any] = Field(default_factory=dict)
    messaging: dict[str, Any] = Field(default_factory=dict)
    health: dict[str, Any] = Field(default_factory=dict)


class SandboxConfig(APIModel):
    sandbox_id: str
    agent_config: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    mcp_servers: list[str] = Field(default_factory=list)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    applied: dict[str, str] = Field(default_factory=dict)


# -- messages ------------------------------------------------------------------------------------


class MessageAccepted(APIModel):
    message_id: str
    status: str
    timestamp: datetime | None = None

    @property
    def id(self) -> str:
        return self.message_id


class Message(APIModel):
    message_id: str
    from_sandbox: str | None = None
    from_agent: str | None = None
    to_sandbox: str | None = None
    to_agent: str | None = None
    message_type: str | None = None
    content: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = None
    requires_response: bool | None = None
    status: str
    status_reason: str | None = None
    correlation_id: str | None = None
    broadcast_id: str | None = None
    attempts: int | None = None
    timestamp: datetime | None = None
    delivered_at: datetime | None = None
    responded_at: datetime | None = None
    response: dict[str, Any] | None = None  # GET /messages/{id} only

    @property
    def id(self) -> str:
        return self.message_id


class MessageAction(APIModel):
    """The 202 of retry / approve / deny."""

    message_id: str
    status: str | None = None


# -- collaborations ------------------------------------------------------------------------------


class CollaborationStarted(APIModel):
    collaboration_id: str
    status: str
    participants: list[str] = Field(default_factory=list)
    collaboration_mode: str | None = None
    estimated_duration_seconds: int | None = None


class CollaborationProgress(APIModel):
    """`percentage` is a whole number (0-100) that never goes down; `current_step` is None
    once the collaboration ended; `remaining_steps` never lists a completed step."""

    percentage: int = 0
    current_step: str | None = None
    completed_steps: list[str] = Field(default_factory=list)
    remaining_steps: list[str] = Field(default_factory=list)

    @field_validator("percentage", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # An older server could send 12.5: shown as a whole number, like every other client.
        if isinstance(value, float) and value == value:
            return max(0, min(100, int(value)))
        return value

    @property
    def steps_total(self) -> int:
        """Every step once, whether completed, remaining or the one in progress (fixed once
        the plan is known)."""
        names = set(self.completed_steps) | set(self.remaining_steps)
        if self.current_step:
            names.add(self.current_step)
        return len(names)

    @property
    def steps_done(self) -> int:
        return len(self.completed_steps)


class CollaborationParticipant(APIModel):
    sandbox_id: str
    name: str | None = None
    status: str | None = None
    messages_exchanged: int | None = None


class CollaborationMessage(APIModel):
    message_id: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: Any = None
    content: Any = None


class CollaborationErrorInfo(APIModel):
    code: str | None = None
    message: str | None = None


COLLABORATION_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class CollaborationInfo(APIModel):
    collaboration_id: str
    workspace_id: str | None = None
    task: str | None = None
    collaboration_mode: str | None = None
    status: str
    progress: CollaborationProgress | None = None
    participants: list[CollaborationParticipant] = Field(default_factory=list)
    messages: list[CollaborationMessage] = Field(default_factory=list)
    deliverables: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    started_at: datetime | None = None
    estimated_completion: datetime | None = None
    completed_at: datetime | None = None
    error: CollaborationErrorInfo | None = None

    @property
    def id(self) -> str:
        return self.collaboration_id

    @property
    def done(self) -> bool:
        return self.status in COLLABORATION_TERMINAL


class CollaborationSummary(APIModel):
    """One item of `GET /workspaces/{id}/collaborations` (no steps nor messages: `get()`)."""

    collaboration_id: str
    workspace_id: str | None = None
    task: str | None = None
    collaboration_mode: str | None = None
    orchestrator: dict[str, str] = Field(default_factory=dict)
    status: str
    percentage: int = 0
    participants: list[str] = Field(default_factory=list)
    plan_source: str | None = None
    warnings: list[str] = Field(default_factory=list)
    error: CollaborationErrorInfo | None = None
    timeout: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.collaboration_id

    @property
    def done(self) -> bool:
        return self.status in COLLABORATION_TERMINAL


class CollaborationCancelled(APIModel):
    collaboration_id: str
    status: str


# -- system --------------------------------------------------------------------------------------


class SystemHealth(APIModel):
    status: str
    version: str | None = None
    services: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None


class SystemInfo(APIModel):
    version: str | None = None
    edition: str | None = None
    features: dict[str, Any] = Field(default_factory=dict)
    supported_llm_providers: list[str] = Field(default_factory=list)
    supported_mcp_servers: list[str] = Field(default_factory=list)


# -- streams -------------------------------------------------------------------------------------


class StreamEvent(APIModel):
    """One server → client WebSocket frame: `{channel, event, data, timestamp, id}`."""

    channel: str
    event: str
    data: Any = None
    timestamp: datetime | None = None
    id: int | None = None
