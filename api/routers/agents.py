"""Spec section 5: agent discovery across a workspace's sandboxes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import CurrentUser, SessionDep, rate_limit
from api.envelope import Envelope, ok
from api.schemas.agents import DiscoveredAgents
from api.services import agents as service
from api.services import workspaces as workspace_service

router = APIRouter(tags=["agents"], dependencies=[rate_limit("workspace")])


@router.get(
    "/workspaces/{workspace_id}/agents/discover",
    response_model=Envelope[DiscoveredAgents],
    operation_id="agents_discover",
)
async def discover_agents(
    workspace_id: str,
    user: CurrentUser,
    session: SessionDep,
    capability: Annotated[
        str | None,
        Query(
            max_length=100,
            description='fuzzy: "api design" finds "api_design" and "REST API design"',
        ),
    ] = None,
    role: Annotated[
        str | None, Query(max_length=100, description="case-insensitive, part of the role")
    ] = None,
    sandbox_id: Annotated[
        str | None, Query(max_length=32, description="unknown id: no agents; malformed: 422")
    ] = None,
) -> Response:
    """Every agent (primary and sub-agents) of the workspace's sandboxes, filtered."""
    ws = await workspace_service.get_owned(session, workspace_id, user)
    found = await service.discover(
        session, ws, capability=capability, role=role, sandbox_id=sandbox_id
    )
    data = found.model_dump(mode="json")
    if capability is None or not capability.strip():
        # A score only means something against a capability query.
        for agent in data["agents"]:
            agent.pop("match_score", None)
    return ok(data)
