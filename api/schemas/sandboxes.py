"""Sandbox requests and responses (spec sections 3, 6 sandbox config, 7 sandbox metrics)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from api.schemas.common import Description, Name, RequestModel, SafeStr
from api.schemas.config import MASK, LLMParameters
from domain.containers import MAX_DISK_MB, MIN_DISK_MB
from domain.enums import LLMProviderName
from domain.sandbox_env import refused_env_name

SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,199}$"


def _allowed_env_name(name: str) -> str:
    # Loader, Python and platform variables would reach the platform's runtime
    # (domain/sandbox_env.py): refused with the variable's name.
    reason = refused_env_name(name)
    if reason is not None:
        raise ValueError(reason)
    return name


EnvVars = Annotated[
    dict[
        Annotated[str, StringConstraints(pattern=ENV_NAME), AfterValidator(_allowed_env_name)],
        Annotated[SafeStr, StringConstraints(max_length=8192)],
    ],
    Field(max_length=100),
]


class AgentSpec(RequestModel):
    name: Name
    role: Name
    description: Description | None = None
    system_prompt: Annotated[SafeStr, StringConstraints(max_length=10000)] | None = None
    capabilities: Annotated[
        list[Annotated[SafeStr, StringConstraints(min_length=1, max_length=100)]],
        Field(max_length=50),
    ] = Field(default_factory=list)
    llm_provider: LLMProviderName | None = None
    llm_model: Annotated[SafeStr, StringConstraints(min_length=1, max_length=200)] | None = None
    llm_parameters: LLMParameters | None = None


class AgentConfig(RequestModel):
    primary_agent: AgentSpec
    sub_agents: Annotated[list[AgentSpec], Field(max_length=20)] = Field(default_factory=list)
    llm_provider: LLMProviderName | None = None
    llm_model: Annotated[SafeStr, StringConstraints(min_length=1, max_length=200)] | None = None
    llm_parameters: LLMParameters | None = None

    @model_validator(mode="after")
    def _unique_agent_names(self) -> AgentConfig:
        names = [self.primary_agent.name, *(a.name for a in self.sub_agents)]
        if len(set(names)) != len(names):
            raise ValueError("agent names must be unique within a sandbox")
        return self


class ResourcesIn(RequestModel):
    memory_mb: Annotated[int, Field(ge=128, le=16384)] | None = None
    cpu_cores: Annotated[float, Field(ge=0.1, le=16)] | None = None
    timeout_seconds: Annotated[int, Field(ge=30, le=3600)] | None = None
    max_processes: Annotated[int, Field(ge=1, le=100)] | None = None
    # Size of /workspace (MiB): a write past it fails with ENOSPC inside the sandbox.
    disk_mb: Annotated[int, Field(ge=MIN_DISK_MB, le=MAX_DISK_MB)] | None = None


class SandboxCreate(RequestModel):
    name: Name
    agent_config: AgentConfig
    resources: ResourcesIn | None = None
    mcp_servers: Annotated[list[Name], Field(max_length=20)] = Field(default_factory=list)
    environment_variables: EnvVars = Field(default_factory=dict)

    @field_validator("mcp_servers")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each MCP server may be listed once")
        return value


class SandboxConfigUpdate(RequestModel):
    """A PUT accepts the body GET returned (edit a field, send it all back): its read-only
    fields are allowed, `sandbox_id` must name the sandbox of the path (checked by the
    service), `applied` is ignored. Any other unknown field is still refused."""

    agent_config: AgentConfig | None = None
    resources: ResourcesIn | None = None
    mcp_servers: Annotated[list[Name], Field(max_length=20)] | None = None
    environment_variables: EnvVars | None = None
    # Read-only, from GET: never stored.
    sandbox_id: Annotated[SafeStr, StringConstraints(max_length=64)] | None = None
    applied: Annotated[dict[str, Any], Field(max_length=50)] | None = None


class ConnectionDetails(BaseModel):
    collaboration_bus_url: str
    api_endpoint: str


class SandboxCreated(BaseModel):
    sandbox_id: str
    name: str
    workspace_id: str
    status: str
    connection_details: ConnectionDetails
    created_at: str


class Health(BaseModel):
    status: str
    last_heartbeat: str | None


class SandboxOut(BaseModel):
    sandbox_id: str
    name: str
    workspace_id: str
    status: str
    status_reason: str | None
    agent_config: dict[str, Any]
    resources: dict[str, Any]
    mcp_servers: list[str]
    health: Health
    restart_count: int
    created_at: str
    updated_at: str
    started_at: str | None


class SandboxMetricsSummary(BaseModel):
    cpu_usage_percent: float | None
    memory_usage_mb: float | None
    message_count: int
    uptime_seconds: int


class SandboxDetail(SandboxOut):
    metrics: SandboxMetricsSummary
    connection_details: ConnectionDetails


class LifecycleAccepted(BaseModel):
    sandbox_id: str
    status: str
    estimated_ready_seconds: int | None = None


class LogEntry(BaseModel):
    timestamp: str
    level: str
    message: str


class LogsOut(BaseModel):
    sandbox_id: str
    logs: list[LogEntry]
    meta: dict[str, Any]


class SandboxConfigOut(BaseModel):
    sandbox_id: str
    agent_config: dict[str, Any]
    resources: dict[str, Any]
    mcp_servers: list[str]
    environment_variables: dict[str, str]
    applied: dict[str, str] = Field(default_factory=dict)


def mask_env(env: dict[str, str]) -> dict[str, str]:
    """Values of secret-looking variables are never returned."""
    return {k: (MASK if SECRET_NAME.search(k) else v) for k, v in env.items()}
