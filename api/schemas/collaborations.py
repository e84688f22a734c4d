"""Collaboration requests and responses (spec section 5)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from api.schemas.common import Name, RequestModel, SafeStr, trimmed

Mode = Literal["orchestrated", "peer_to_peer", "swarm"]
Status = Literal["initializing", "in_progress", "completed", "failed", "cancelled"]
Ref = trimmed(100)


def _unique(values: list[str], what: str) -> list[str]:
    if len({v.lower() for v in values}) != len(values):
        raise ValueError(f"{what} must be unique")
    return values


class OrchestrateRequest(RequestModel):
    task: trimmed(8000)  # type: ignore[valid-type]
    participants: Annotated[
        list[Ref], Field(min_length=2, max_length=20, description="sandbox names or ids")
    ]
    collaboration_mode: Mode = "orchestrated"
    orchestrator: Name | None = Field(
        default=None,
        description="an agent name (or a sandbox name/id: its primary agent); default the "
        "first participant's primary agent",
    )
    timeout: Annotated[int, Field(ge=30, le=3600, description="seconds")] = 300
    deliverables: Annotated[list[Ref], Field(max_length=20)] = Field(default_factory=list)
    max_turns: Annotated[int, Field(ge=1, le=50)] | None = Field(
        default=None, description="peer_to_peer only: the turn limit (default two rounds)"
    )

    @field_validator("participants")
    @classmethod
    def _participants_unique(cls, v: list[str]) -> list[str]:
        return _unique(v, "participants")

    @field_validator("deliverables")
    @classmethod
    def _deliverables_unique(cls, v: list[str]) -> list[str]:
        return _unique(v, "deliverables")


class CollaborationAccepted(BaseModel):
    collaboration_id: str
    status: Status
    collaboration_mode: Mode
    participants: list[str]
    orchestrator: dict[str, str]
    estimated_duration_seconds: int


class ProgressOut(BaseModel):
    percentage: int = Field(ge=0, le=100)
    current_step: str | None
    completed_steps: list[str]
    remaining_steps: list[str]


class ParticipantOut(BaseModel):
    sandbox_id: str
    name: str
    agent: str
    status: Literal["idle", "active", "failed"]
    messages_exchanged: int


class CollaborationMessage(BaseModel):
    message_id: str
    from_: str | None = Field(alias="from", serialization_alias="from")
    to: str
    from_agent: str | None
    to_agent: str | None
    message_type: str
    status: str
    step: str | None
    content: dict[str, Any]
    timestamp: str

    model_config = {"populate_by_name": True}


class StepOut(BaseModel):
    step: str
    assignee: str
    agent: str
    status: Literal["running", "completed", "failed", "cancelled"]
    attempts: int
    message_ids: list[str]
    output: str | None
    error: str | None


class ErrorOut(BaseModel):
    code: str | None
    message: str


class CollaborationDetail(BaseModel):
    collaboration_id: str
    workspace_id: str
    task: str
    collaboration_mode: Mode
    orchestrator: dict[str, str]
    status: Status
    progress: ProgressOut
    participants: list[ParticipantOut]
    steps: list[StepOut]
    messages: list[CollaborationMessage]
    deliverables: dict[str, str]
    result: dict[str, Any] | None
    error: ErrorOut | None
    timeout: int
    created_at: str
    started_at: str | None
    estimated_completion: str | None
    completed_at: str | None


class CancelRequest(RequestModel):
    reason: Annotated[SafeStr, StringConstraints(max_length=500)] | None = None


class CollaborationCancelled(BaseModel):
    collaboration_id: str
    status: Status = Field(
        description="cancelled, or still in_progress when its steps take longer than a few "
        "seconds to stop (the cancel goes on; watch the collaboration)"
    )
    cancel_requested: bool


class CollaborationSummary(BaseModel):
    """One row of `GET /workspaces/{id}/collaborations` (an extension of the spec): enough to
    find the one to open with `GET /collaborations/{id}`, without its steps and messages."""

    collaboration_id: str
    workspace_id: str
    task: str
    collaboration_mode: Mode
    orchestrator: dict[str, str]
    status: Status
    percentage: int = Field(ge=0, le=100)
    participants: list[str] = Field(description="sandbox ids")
    plan_source: str | None = Field(
        default=None, description="from `result`: the model's own plan or the fallback"
    )
    warnings: list[str] = Field(default_factory=list, description="from `result`")
    error: ErrorOut | None
    timeout: int
    created_at: str
    started_at: str | None
    completed_at: str | None
