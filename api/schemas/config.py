"""Workspace configuration (spec section 6): settings, LLM providers, MCP servers, policy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, HttpUrl, StringConstraints, field_validator, model_validator

from api.schemas.common import Name, RequestModel, SafeStr
from api.schemas.workspaces import WorkspaceSettings, WorkspaceSettingsPatch
from domain.enums import LLMProviderName, McpTransport, PolicyMode

Short = Annotated[SafeStr, StringConstraints(min_length=1, max_length=200)]
Secret = Annotated[SafeStr, StringConstraints(min_length=1, max_length=4096)]
MASK = "********"


class LLMParameters(RequestModel):
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None


class LLMProviderIn(RequestModel):
    name: LLMProviderName
    # Write-only. Omitted (or the mask sent back from GET) keeps the stored key.
    api_key: Secret | None = None
    base_url: HttpUrl | None = None
    models: Annotated[list[Short], Field(max_length=50)] = Field(default_factory=list)
    default_model: Short | None = None
    parameters: LLMParameters | None = None

    @model_validator(mode="after")
    def _default_model_listed(self) -> LLMProviderIn:
        if self.default_model and self.models and self.default_model not in self.models:
            raise ValueError("default_model must be one of models")
        return self


class McpServerIn(RequestModel):
    name: Name
    transport: McpTransport = McpTransport.STDIO
    command: Short | None = None
    args: Annotated[
        list[Annotated[SafeStr, StringConstraints(max_length=1000)]], Field(max_length=100)
    ] = Field(default_factory=list)
    url: HttpUrl | None = None
    env: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)],
        Annotated[SafeStr, StringConstraints(max_length=4096)],
    ] = Field(default_factory=dict)
    enabled: bool = True

    @model_validator(mode="after")
    def _transport_needs(self) -> McpServerIn:
        if self.transport == McpTransport.STDIO and not self.command:
            raise ValueError("a stdio MCP server needs a command")
        if self.transport == McpTransport.SSE and not self.url:
            raise ValueError("an sse MCP server needs a url")
        return self


class PolicyRule(RequestModel):
    from_: Annotated[Name, Field(alias="from")]
    to: Name | Annotated[list[Name], Field(min_length=1, max_length=1000)]
    message_types: list[
        Annotated[str, StringConstraints(pattern=r"^(request|response|notification|command)$")]
    ] = Field(default_factory=list)
    approval_required: bool = False

    model_config = RequestModel.model_config | {"populate_by_name": True}


class CollaborationPolicy(RequestModel):
    mode: PolicyMode = PolicyMode.ALLOW_ALL
    rules: Annotated[list[PolicyRule], Field(max_length=1000)] = Field(default_factory=list)


class WorkspaceConfigUpdate(RequestModel):
    settings: WorkspaceSettingsPatch | None = None
    llm_providers: Annotated[list[LLMProviderIn], Field(max_length=10)] | None = None
    mcp_servers: Annotated[list[McpServerIn], Field(max_length=100)] | None = None
    collaboration_policy: CollaborationPolicy | None = None

    @field_validator("llm_providers")
    @classmethod
    def _unique_providers(cls, value: list[LLMProviderIn] | None) -> list[LLMProviderIn] | None:
        if value is not None and len({p.name for p in value}) != len(value):
            raise ValueError("each provider may appear once")
        return value

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, value: list[McpServerIn] | None) -> list[McpServerIn] | None:
        if value is not None and len({s.name for s in value}) != len(value):
            raise ValueError("each MCP server name may appear once")
        return value


class LLMProviderOut(BaseModel):
    name: str
    api_key: str | None = None  # masked, or the ${ENV_VAR} reference as written
    api_key_set: bool = False
    base_url: str | None = None
    models: list[str] = []
    default_model: str | None = None
    parameters: dict[str, Any] | None = None


class McpServerOut(BaseModel):
    name: str
    status: str
    transport: str
    command: str | None = None
    args: list[str] = []
    url: str | None = None
    env: dict[str, str] = {}
    enabled: bool = True


class EffectiveLLM(BaseModel):
    """The provider and model an agent without its own llm_provider really gets (the worker's
    choice, activities/agent.py `choose_provider`): `settings.default_llm_provider` counts only
    when that provider is configured."""

    provider: str
    model: str
    source: Literal["default_llm_provider", "only_provider", "offline"] = Field(
        description="default_llm_provider: it is configured; only_provider: the one "
        "configured provider; offline: the embedded model, as no usable provider is configured"
    )
    reason: str


class WorkspaceConfigOut(BaseModel):
    workspace_id: str
    settings: WorkspaceSettings
    llm_providers: list[LLMProviderOut]
    mcp_servers: list[McpServerOut]
    collaboration_policy: dict[str, Any]
    effective_llm: EffectiveLLM
