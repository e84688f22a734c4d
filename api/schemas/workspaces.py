"""Workspace requests and responses (spec section 2) and the settings they carry."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from api.schemas.common import Description, Name, RequestModel
from domain.enums import LLMProviderName, PolicyMode

# What the workspace's sandboxes may reach over the network (domain.containers.EGRESS_MODES):
# `none` only each other; `internet` also public addresses, never private ranges or the host.
# LLM calls run in the worker, not in sandboxes, so `none` is the default.
Egress = Literal["none", "internet"]


class ResourceDefaults(RequestModel):
    memory_mb: Annotated[int, Field(ge=128, le=16384)] = 512
    cpu_cores: Annotated[float, Field(ge=0.1, le=16)] = 1
    timeout_seconds: Annotated[int, Field(ge=30, le=3600)] = 300


class ResourceDefaultsPatch(RequestModel):
    memory_mb: Annotated[int, Field(ge=128, le=16384)] | None = None
    cpu_cores: Annotated[float, Field(ge=0.1, le=16)] | None = None
    timeout_seconds: Annotated[int, Field(ge=30, le=3600)] | None = None


class WorkspaceSettings(RequestModel):
    max_sandboxes: Annotated[int, Field(ge=1, le=1000)] = 10
    default_llm_provider: LLMProviderName = LLMProviderName.QWEN
    collaboration_policy: PolicyMode = PolicyMode.ALLOW_ALL
    resource_defaults: ResourceDefaults = Field(default_factory=ResourceDefaults)
    egress: Egress = "none"


class WorkspaceSettingsPatch(RequestModel):
    """Partial settings: only the given keys change (merged into the stored settings)."""

    max_sandboxes: Annotated[int, Field(ge=1, le=1000)] | None = None
    default_llm_provider: LLMProviderName | None = None
    collaboration_policy: PolicyMode | None = None
    resource_defaults: ResourceDefaultsPatch | None = None
    # Applies to each sandbox when its container is next (re)created: start/restart.
    egress: Egress | None = None


class WorkspaceCreate(RequestModel):
    name: Name
    description: Description | None = None
    settings: WorkspaceSettingsPatch | None = None


class WorkspaceUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    settings: WorkspaceSettingsPatch | None = None


class SandboxSummary(BaseModel):
    sandbox_id: str
    name: str
    status: str


class WorkspaceOut(BaseModel):
    workspace_id: str
    name: str
    description: str | None
    owner_id: str
    settings: WorkspaceSettings
    sandbox_count: int
    created_at: str
    updated_at: str


class WorkspaceDetail(WorkspaceOut):
    sandboxes: list[SandboxSummary]
