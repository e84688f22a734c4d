"""Agent discovery responses (spec section 5, GET /workspaces/{id}/agents/discover)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

AgentStatus = Literal["available", "busy", "offline"]


class AgentMetrics(BaseModel):
    messages_processed: int = Field(description="messages delivered to the agent")
    avg_response_time_ms: float | None = Field(
        description="mean delivered → responded time of its replies; null before the first"
    )


class DiscoveredAgent(BaseModel):
    sandbox_id: str
    sandbox_name: str
    agent_name: str
    role: str
    capabilities: list[str]
    capabilities_source: Literal["declared", "derived"]
    status: AgentStatus
    metrics: AgentMetrics
    match_score: float | None = Field(
        default=None, description="only when filtering by capability: 0..1, higher is closer"
    )


class DiscoveredAgents(BaseModel):
    agents: list[DiscoveredAgent]
